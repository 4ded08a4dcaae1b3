"""Reads source files with maintained parsers (markdown-it-py, selectolax, pypdf, python-docx, openpyxl).

Every failure is a `DataFileError` naming the file (and the line where there is one) and the reason, so a
batch can report it and go on with the other files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any

import yaml

from kefu.errors import DataFileError
from kefu.knowledge.ingest.blocks import BlockBuilder, table_markdown
from kefu.knowledge.types import FaqEntry, ParsedDocument

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".csv", ".xlsx", ".jsonl")
FAQ_SUFFIXES = (".csv", ".xlsx", ".jsonl")

_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_LANG_DIRS = {"zh": "zh", "zh-cn": "zh", "zh_cn": "zh", "cn": "zh", "en": "en", "en-us": "en", "en_us": "en"}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)
_SPLIT_LIST = re.compile(r"[|｜\n]+")

# Column names an operator may use in an FAQ table, in English or Chinese.
_FAQ_COLUMNS: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "问题", "标准问题", "标准问"),
    "answer": ("answer", "a", "答案", "回答", "标准答案"),
    "similar_questions": ("similar_questions", "similar", "相似问题", "相似问法"),
    "category": ("category", "分类", "类别"),
    "tags": ("tags", "标签"),
    "lang": ("lang", "language", "语言"),
    "product": ("product", "商品", "产品"),
}


def detect_document_language(text: str) -> str | None:
    """'zh' when Chinese characters make up a good share of the letters, 'en' for Latin text, else None."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk == 0 and latin == 0:
        return None
    # A Chinese character carries about as much as a whole English word (~4.5 letters).
    return "zh" if cjk * 4.5 >= latin * 0.5 else "en"


def _language_from_path(source: str) -> str | None:
    for part in PurePosixPath(source).parts[:-1]:
        lang = _LANG_DIRS.get(part.lower())
        if lang:
            return lang
    return None


def _decode(data: bytes, source: str) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DataFileError(source, None, "not text in UTF-8 or GB18030")


def _title_from_name(source: str) -> str:
    return PurePosixPath(source).stem.replace("_", " ").replace("-", " ").strip() or source


def parse_document(data: bytes, source: str) -> ParsedDocument:
    """Parse one file by its suffix; `source` is its name in the knowledge base and in error messages."""
    suffix = PurePosixPath(source).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise DataFileError(
            source, None, f"unsupported file type {suffix or '(none)'}; supported: " + ", ".join(SUPPORTED_SUFFIXES)
        )
    try:
        doc = parser(data, source)
    except DataFileError:
        raise
    except Exception as exc:  # a parser library's own error: name the file and say what it said
        raise DataFileError(
            source, None, f"cannot be read as {suffix[1:].upper()}: {type(exc).__name__}: {exc}"
        ) from None
    if not doc.blocks and not doc.faq:
        raise DataFileError(source, None, "no text found in the file")
    return doc


def _finish(
    builder: BlockBuilder, source: str, fmt: str, meta: dict[str, Any], display: str | None = None
) -> ParsedDocument:
    text_sample = " ".join(b.text for b in builder.blocks[:40])
    lang = _str_or_none(meta.pop("lang", None)) or _language_from_path(source) or detect_document_language(text_sample)
    return ParsedDocument(
        source=source,
        format=fmt,
        title=_str_or_none(meta.pop("title", None)) or builder.title or _title_from_name(source),
        blocks=tuple(builder.blocks),
        lang=lang,
        category=_str_or_none(meta.pop("category", None)),
        product=_str_or_none(meta.pop("product", None)),
        display_text=display if display is not None else builder.display_markdown(),
        meta=meta,
    )


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# --- Markdown and plain text -------------------------------------------------------------------


def _front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DataFileError(source, 1, f"invalid front matter: {exc}") from None
    if not isinstance(data, dict):
        raise DataFileError(source, 1, "front matter must be a mapping (title: …, lang: …)")
    return {str(k): v for k, v in data.items()}, text[match.end() :]


def _parse_markdown(data: bytes, source: str) -> ParsedDocument:
    from markdown_it import MarkdownIt

    meta, text = _front_matter(_decode(data, source), source)
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    builder = BlockBuilder()

    def source_of(mapping: list[int] | None) -> str:
        return "\n".join(lines[mapping[0] : mapping[1]]) if mapping else ""

    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.level != 0 or token.nesting == -1:
            i += 1
            continue
        if token.type == "heading_open":
            builder.heading(int(token.tag[1:]), tokens[i + 1].content)
        elif token.type == "paragraph_open":
            builder.add("paragraph", source_of(token.map))
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            items = tuple(source_of(t.map) for t in _children(tokens, i) if t.type == "list_item_open" and t.level == 1)
            builder.add("list", source_of(token.map), parts=items)
        elif token.type == "table_open":
            table_lines = [line for line in source_of(token.map).splitlines() if line.strip()]
            builder.add(
                "table", "\n".join(table_lines), parts=tuple(table_lines[2:]), header="\n".join(table_lines[:2])
            )
        elif token.type in ("fence", "code_block"):
            builder.add("code", source_of(token.map))
        elif token.type == "blockquote_open":
            builder.add("quote", source_of(token.map))
        elif token.type == "html_block":
            builder.add("paragraph", re.sub(r"<[^>]+>", " ", token.content))
        i += 1
    return _finish(builder, source, "markdown", meta, display=text.strip())


def _children(tokens: list[Any], open_index: int) -> Iterator[Any]:
    """Tokens inside the block opened at `open_index`, up to its matching close."""
    depth = 0
    for token in tokens[open_index:]:
        depth += token.nesting
        yield token
        if depth == 0:
            return


def _parse_text(data: bytes, source: str) -> ParsedDocument:
    text = _decode(data, source).replace("\r\n", "\n")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    builder = BlockBuilder()
    if len(paragraphs) > 1 and len(paragraphs[0]) <= 80 and "\n" not in paragraphs[0]:
        builder.heading(1, paragraphs.pop(0))
    for paragraph in paragraphs:
        builder.add("paragraph", paragraph)
    return _finish(builder, source, "text", {})


# --- HTML ----------------------------------------------------------------------------------------

_HTML_SKIP = frozenset(
    {"script", "style", "noscript", "nav", "footer", "header", "aside", "form", "template", "svg", "head"}
)
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}


def _parse_html(data: bytes, source: str) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode(data, source))
    title_node = tree.css_first("title")
    builder = BlockBuilder(title=_str_or_none(title_node.text(strip=True)) if title_node is not None else None)
    root = tree.body or tree.root
    if root is not None:
        _walk_html(root, builder)
    return _finish(builder, source, "html", {})


def _walk_html(node: Any, builder: BlockBuilder) -> None:
    loose: list[str] = []

    def flush() -> None:
        if loose:
            builder.add("paragraph", " ".join(" ".join(loose).split()))
            loose.clear()

    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            if child.text_content and child.text_content.strip():
                loose.append(child.text_content)
            continue
        if tag in _HTML_SKIP or tag.startswith("-"):
            continue
        if tag in ("br",):
            continue
        if tag in ("span", "a", "strong", "em", "b", "i", "code", "small", "sup", "sub", "mark", "u"):
            loose.append(child.text(separator=" "))
            continue
        flush()
        text = " ".join(child.text(separator=" ").split())
        if tag in _HTML_HEADINGS:
            builder.heading(_HTML_HEADINGS[tag], text)
        elif tag == "p":
            builder.add("paragraph", text)
        elif tag in ("ul", "ol"):
            items = tuple("- " + " ".join(li.text(separator=" ").split()) for li in child.css("li"))
            builder.add("list", "\n".join(items), parts=items)
        elif tag == "table":
            rows = [[c.text(separator=" ") for c in tr.css("th, td")] for tr in child.css("tr")]
            whole, body, header = table_markdown(rows)
            builder.add("table", whole, parts=body, header=header)
        elif tag == "pre":
            builder.add("code", child.text())
        elif tag == "blockquote":
            builder.add("quote", "> " + text)
        elif tag in ("dl",):
            builder.add("list", "\n".join("- " + " ".join(n.text(separator=" ").split()) for n in child.css("dt, dd")))
        else:
            _walk_html(child, builder)
    flush()


# --- PDF and DOCX --------------------------------------------------------------------------------


def _join_lines(lines: Iterable[str]) -> str:
    """Joins a PDF paragraph's hard-wrapped lines: no space between Chinese characters, one between words."""
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(line[0])):
            out += " "
        out += line
    return out


def _parse_pdf(data: bytes, source: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataFileError(source, None, "the PDF is password-protected")
        info = reader.metadata
        builder = BlockBuilder(title=_str_or_none(info.title) if info is not None else None)
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            paragraphs = [_join_lines(p.splitlines()) for p in re.split(r"\n\s*\n", text)]
            paragraphs = [p for p in paragraphs if p]
            if len(paragraphs) == 1:
                # Many PDFs have no blank lines at all: fall back to one paragraph per sentence-ending line.
                paragraphs = [
                    _join_lines(p.splitlines()) for p in re.split(r"(?<=[。！？.!?])\s*\n", text) if p.strip()
                ]
            if paragraphs:
                builder.heading(2, f"p. {number}")
            for paragraph in paragraphs:
                builder.add("paragraph", paragraph)
    except PdfReadError as exc:
        raise DataFileError(source, None, f"not a readable PDF: {exc}") from None
    if not builder.blocks:
        raise DataFileError(
            source, None, "the PDF has no extractable text (scanned pages need OCR, which kefu does not do)"
        )
    return _finish(builder, source, "pdf", {})


def _parse_docx(data: bytes, source: str) -> ParsedDocument:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    builder = BlockBuilder(title=_str_or_none(document.core_properties.title))
    pending_items: list[str] = []

    def flush_list() -> None:
        if pending_items:
            builder.add("list", "\n".join(pending_items), parts=tuple(pending_items))
            pending_items.clear()

    for item in document.iter_inner_content():
        if isinstance(item, Table):
            flush_list()
            rows = [[cell.text for cell in row.cells] for row in item.rows]
            whole, body, header = table_markdown(rows)
            builder.add("table", whole, parts=body, header=header)
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        if style == "Title":
            flush_list()
            builder.title = builder.title or text
        elif style.startswith("Heading"):
            flush_list()
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 2
            builder.heading(level, text)
        elif style.startswith("List") or (item._p.pPr is not None and item._p.pPr.numPr is not None):
            pending_items.append("- " + text)
        else:
            flush_list()
            builder.add("paragraph", text)
    flush_list()
    return _finish(builder, source, "docx", {})


# --- FAQ tables ----------------------------------------------------------------------------------


def _faq_columns(header: Iterable[Any], source: str) -> dict[str, int]:
    names = [str(h or "").strip().lower() for h in header]
    found: dict[str, int] = {}
    for key, aliases in _FAQ_COLUMNS.items():
        for index, name in enumerate(names):
            if name in aliases:
                found[key] = index
                break
    missing = [k for k in ("question", "answer") if k not in found]
    if missing:
        raise DataFileError(
            source,
            1,
            f"an FAQ table needs the columns question and answer (missing: {', '.join(missing)}); found: {names}",
        )
    return found


def _split_values(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in _SPLIT_LIST.split(str(value)) if v.strip())


def _faq_entry(row: dict[str, Any], source: str, line: int) -> FaqEntry:
    question = _str_or_none(row.get("question"))
    answer = _str_or_none(row.get("answer"))
    if not question or not answer:
        raise DataFileError(source, line, "every FAQ row needs a question and an answer")
    lang = _str_or_none(row.get("lang"))
    return FaqEntry(
        question=question,
        answer=answer,
        similar=_split_values(row.get("similar_questions")),
        category=_str_or_none(row.get("category")),
        tags=tuple(t for tag in _split_values(row.get("tags")) for t in tag.split(",") if t.strip()),
        lang=lang.lower() if lang else detect_document_language(question + answer),
        product=_str_or_none(row.get("product")),
        line=line,
    )


def _faq_document(entries: list[FaqEntry], source: str, fmt: str) -> ParsedDocument:
    if not entries:
        raise DataFileError(source, None, "the FAQ table has no rows")
    langs = {e.lang for e in entries}
    display = "\n\n".join(f"## {e.question}\n\n{e.answer}" for e in entries)
    return ParsedDocument(
        source=source,
        format=fmt,
        title="FAQ · 常见问题" if len(langs) > 1 else ("常见问题" if langs == {"zh"} else "FAQ"),
        faq=tuple(entries),
        lang=next(iter(langs)) if len(langs) == 1 else None,
        display_text=display,
    )


def _parse_csv(data: bytes, source: str) -> ParsedDocument:
    reader = csv.reader(io.StringIO(_decode(data, source), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataFileError(source, None, "the CSV file is empty") from None
    columns = _faq_columns(header, source)
    entries = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        values = {key: row[index] if index < len(row) else None for key, index in columns.items()}
        entries.append(_faq_entry(values, source, reader.line_num))
    return _faq_document(entries, source, "csv")


def _parse_xlsx(data: bytes, source: str) -> ParsedDocument:
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise DataFileError(source, None, "the first sheet is empty")
        columns = _faq_columns(header, source)
        entries = []
        for number, row in enumerate(rows, start=2):
            if not any(c is not None and str(c).strip() for c in row):
                continue
            values = {key: row[index] if index < len(row) else None for key, index in columns.items()}
            entries.append(_faq_entry(values, f"{source} (sheet {sheet.title!r}, row)", number))
    finally:
        workbook.close()
    return _faq_document(entries, source, "xlsx")


def _parse_jsonl(data: bytes, source: str) -> ParsedDocument:
    entries = []
    for number, line in enumerate(_decode(data, source).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(source, number, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataFileError(source, number, "each line must be a JSON object with question and answer")
        row = {key: next((obj[a] for a in aliases if a in obj), None) for key, aliases in _FAQ_COLUMNS.items()}
        entries.append(_faq_entry(row, source, number))
    return _faq_document(entries, source, "jsonl")


_PARSERS: dict[str, Callable[[bytes, str], ParsedDocument]] = {
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".txt": _parse_text,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
    ".csv": _parse_csv,
    ".xlsx": _parse_xlsx,
    ".jsonl": _parse_jsonl,
}
