"""Cuts a parsed document into chunks: within one section, under a token budget, structure kept whole.

A heading never falls inside a chunk (every chunk belongs to one section); a list, a table or a
paragraph larger than the budget is cut between items, rows (the header repeated) or sentences; an FAQ
pair is always one chunk, whatever its size.
"""

from __future__ import annotations

from itertools import groupby

from kefu.knowledge.text import estimate_tokens, plain_text, slugify, split_sentences
from kefu.knowledge.types import Block, ChunkDraft, FaqEntry, ParsedDocument


def chunk_document(doc: ParsedDocument, *, budget: int) -> list[ChunkDraft]:
    """The chunks of one document, in reading order."""
    if doc.faq:
        return [_faq_chunk(doc, entry, i) for i, entry in enumerate(doc.faq)]
    chunks: list[ChunkDraft] = []
    for section, group in groupby(doc.blocks, key=lambda b: b.section):
        pieces = [piece for block in group for piece in _pieces(block, budget)]
        for text in _pack(pieces, budget):
            chunks.append(_passage_chunk(doc, section, text, len(chunks)))
    return chunks


def _faq_chunk(doc: ParsedDocument, entry: FaqEntry, ordinal: int) -> ChunkDraft:
    similar = " ".join(entry.similar)
    return ChunkDraft(
        ordinal=ordinal,
        kind="faq",
        text=f"Q: {entry.question}\nA: {entry.answer}",
        search_text=f"{entry.question} {similar}\n{entry.answer}".strip(),
        section=(entry.question,),
        anchor=slugify(entry.question),
        ref=f"{doc.source}#{entry.question}",
        lang=entry.lang or doc.lang,
        questions=entry.variants,
        meta={
            "question": entry.question,
            "answer": entry.answer,
            "category": entry.category,
            "product": entry.product,
            "tags": list(entry.tags),
        },
    )


def _passage_chunk(doc: ParsedDocument, section: tuple[str, ...], text: str, ordinal: int) -> ChunkDraft:
    heading = " › ".join((doc.title, *section))
    return ChunkDraft(
        ordinal=ordinal,
        kind="passage",
        text=text,
        search_text=f"{heading}\n{plain_text(text)}",
        section=section,
        anchor=slugify(section[-1]) if section else "",
        ref=f"{doc.source}#{section[0]}" if section else doc.source,
        lang=doc.lang,
        meta={"category": doc.category, "product": doc.product},
    )


def _pieces(block: Block, budget: int) -> list[str]:
    """The block whole when it fits, else its items / rows / sentences (none larger than the budget)."""
    if estimate_tokens(block.text) <= budget:
        return [block.text]
    if block.kind == "table" and block.parts:
        rows = _pack(list(block.parts), budget - estimate_tokens(block.header), sep="\n")
        return [f"{block.header}\n{rows_text}" for rows_text in rows]
    if block.kind == "list" and block.parts:
        return _pack([p for part in block.parts for p in _fit(part, budget)], budget, sep="\n")
    return _pack(_fit(block.text, budget), budget, sep="")


def _fit(text: str, budget: int) -> list[str]:
    """`text` as pieces no larger than the budget: whole, or by sentences, or (a run-on sentence) by characters."""
    if estimate_tokens(text) <= budget:
        return [text]
    out: list[str] = []
    for sentence in split_sentences(text):
        if estimate_tokens(sentence) <= budget:
            out.append(sentence)
            continue
        step = max(16, len(sentence) * budget // max(1, estimate_tokens(sentence)))
        out.extend(sentence[i : i + step] for i in range(0, len(sentence), step))
    return out


def _pack(pieces: list[str], budget: int, sep: str = "\n\n") -> list[str]:
    """Greedily joins consecutive pieces while the result stays within the budget."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        cost = estimate_tokens(piece)
        if current and used + cost > budget:
            chunks.append(_join(current, sep))
            current, used = [], 0
        current.append(piece)
        used += cost
    if current:
        chunks.append(_join(current, sep))
    return chunks


def _join(pieces: list[str], sep: str) -> str:
    if sep:
        return sep.join(pieces)
    # Sentences of a split paragraph: Chinese sentences join without a space, English ones with one.
    out = ""
    for piece in pieces:
        if out and not ("\u3400" <= out[-1] <= "\u9fff" or out[-1] in "。！？；，"):
            out += " "
        out += piece
    return out
