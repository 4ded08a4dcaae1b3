"""Ingestion as an operator sees it: every format parsed, structure kept, budgets met, errors naming the file."""

from __future__ import annotations

import json

import pytest

from kefu.errors import DataFileError
from kefu.knowledge.ingest import chunk_document, parse_document
from kefu.language import estimate_tokens
from tests.support.documents import docx_bytes, pdf_bytes, xlsx_bytes

POLICY_MD = """---
category: returns
product: all
---
# 退换货政策

本政策适用于全部实物商品。

## 7 天无理由退货

- 签收次日起 **7 天内**可申请无理由退货。
- 耳机拆封试戴后仍可退。

### 不支持的商品

定制刻字商品、电子礼品卡不支持无理由退货。

## 运费

| 条件 | 运费 |
| --- | --- |
| 满 ¥99 | 包邮 |
| 不足 ¥99 | ¥8 |
"""


def test_markdown_keeps_sections_lists_and_tables_with_metadata() -> None:
    doc = parse_document(POLICY_MD.encode(), "zh/returns.md")
    assert (doc.title, doc.lang, doc.category, doc.product) == ("退换货政策", "zh", "returns", "all")
    chunks = chunk_document(doc, budget=120)
    by_section = {c.section: c for c in chunks}
    assert set(by_section) == {(), ("7 天无理由退货",), ("7 天无理由退货", "不支持的商品"), ("运费",)}
    table = by_section[("运费",)]
    assert table.text.startswith("| 条件 | 运费 |") and "| 不足 ¥99 | ¥8 |" in table.text  # the table stays whole
    assert table.ref == "zh/returns.md#运费" and table.anchor == "运费"
    nested = by_section[("7 天无理由退货", "不支持的商品")]
    assert nested.ref == "zh/returns.md#7 天无理由退货" and nested.anchor == "不支持的商品"
    assert nested.search_text.startswith("退换货政策 › 7 天无理由退货 › 不支持的商品\n")


def test_long_chinese_text_is_cut_between_sentences_within_the_budget() -> None:
    sentence = "签收次日起七天内，商品完好、不影响二次销售，就可以在订单页申请无理由退货。"
    doc = parse_document(f"# 政策\n\n## 退货\n\n{sentence * 12}".encode(), "policy.md")
    chunks = chunk_document(doc, budget=60)
    assert len(chunks) > 1
    assert all(estimate_tokens(c.text) <= 60 for c in chunks)
    assert all(c.text.endswith("。") for c in chunks)  # no sentence is cut in half
    assert "".join(c.text for c in chunks) == sentence * 12


def test_a_long_table_is_split_by_rows_with_its_header_repeated() -> None:
    rows = "\n".join(f"| 省份{i} | {i % 5 + 1}–{i % 5 + 3} 天 |" for i in range(40))
    doc = parse_document(f"# 配送\n\n## 时效\n\n| 省份 | 时效 |\n| --- | --- |\n{rows}\n".encode(), "shipping.md")
    chunks = chunk_document(doc, budget=80)
    assert len(chunks) > 1
    assert all(c.text.startswith("| 省份 | 时效 |\n| --- | --- |") for c in chunks)
    assert sum(c.text.count("| 省份") for c in chunks) == 40 + len(chunks)


def test_faq_rows_stay_whole_with_every_phrasing_of_the_question() -> None:
    csv_text = (
        "question,answer,similar_questions,category,tags,lang\n"
        '退货运费谁出？,"无理由退货由买家承担运费。质量问题由我们承担。",退货要自己付运费吗|退货邮费谁承担,returns,退货|运费,zh\n'
        "How long does a refund take?,1-3 business days.,when do I get my money back,returns,,en\n"
    )
    doc = parse_document(csv_text.encode(), "faq.csv")
    chunks = chunk_document(doc, budget=10)  # far below one pair: FAQ pairs are never cut
    assert [c.kind for c in chunks] == ["faq", "faq"]
    first = chunks[0]
    assert first.text == "Q: 退货运费谁出？\nA: 无理由退货由买家承担运费。质量问题由我们承担。"
    assert first.questions == ("退货运费谁出？", "退货要自己付运费吗", "退货邮费谁承担")
    assert first.ref == "faq.csv#退货运费谁出？" and first.lang == "zh" and chunks[1].lang == "en"
    assert first.meta["tags"] == ["退货", "运费"] and first.meta["category"] == "returns"


def test_faq_from_xlsx_and_jsonl_with_chinese_column_names() -> None:
    xlsx = xlsx_bytes(
        [["问题", "答案", "相似问题"], ["能开专票吗？", "可以，企业在签收后 30 天内申请。", "专票怎么开"]]
    )
    doc = parse_document(xlsx, "faq.xlsx")
    assert doc.faq[0].variants == ("能开专票吗？", "专票怎么开") and doc.faq[0].lang == "zh"
    line = {"question": "Do you ship abroad?", "answer": "Mainland China only.", "similar_questions": ["ship to HK"]}
    jsonl = parse_document((json.dumps(line) + "\n").encode(), "faq.jsonl")
    assert jsonl.faq[0].similar == ("ship to HK",) and jsonl.faq[0].lang == "en"


def test_html_docx_pdf_and_text_are_read_with_their_structure() -> None:
    html = (
        "<html><head><title>Warranty</title><script>alert(1)</script></head><body><nav>menu</nav>"
        "<h2>Periods</h2><p>Phones: <b>12 months</b>.</p><ul><li>Vacuums: 24 months</li><li>Cases: none</li></ul>"
        "<table><tr><th>Type</th><th>Months</th></tr><tr><td>Lock</td><td>24</td></tr></table></body></html>"
    )
    doc = parse_document(html.encode(), "warranty.html")
    text = "\n".join(b.text for b in doc.blocks)
    assert doc.title == "Warranty" and "alert" not in text and "menu" not in text
    assert [b.kind for b in doc.blocks] == ["paragraph", "list", "table"] and doc.blocks[0].section == ("Periods",)

    manual = parse_document(docx_bytes(), "buds.docx")
    assert manual.title == "Lumo Buds X1 manual"
    assert [(b.kind, b.section) for b in manual.blocks] == [
        ("paragraph", ("Charging",)),
        ("list", ("Charging",)),
        ("table", ("Specifications",)),
    ]
    assert "| Battery | 8 hours |" in manual.blocks[2].text

    pdf = parse_document(pdf_bytes([["Returns within 7 days."], ["Refunds in 1-3 days."]], "Policy"), "policy.pdf")
    assert pdf.title == "Policy" and [b.section for b in pdf.blocks] == [("p. 1",), ("p. 2",)]
    assert "Refunds in 1-3 days." in pdf.blocks[1].text

    txt = parse_document("退货须知\n\n签收后七天内可退。\n\n运费买家承担。".encode("gb18030"), "notes.txt")
    assert txt.title == "退货须知" and len(txt.blocks) == 2 and txt.lang == "zh"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "broken.pdf: "),
        ("manual.docx", b"not a zip file", "cannot be read as DOCX"),
        ("faq.csv", b"title,body\nhello,world\n", "needs the columns question and answer"),
        ("faq.jsonl", b'{"question": "x", "answer": "y"}\n{oops\n', "faq.jsonl:2: invalid JSON"),
        ("image.png", b"\x89PNG", "unsupported file type .png"),
        ("empty.md", b"   \n", "no text found"),
    ],
)
def test_a_file_that_cannot_be_read_gets_an_error_naming_it_and_why(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(DataFileError) as err:
        parse_document(data, name)
    assert str(err.value).startswith(name) and reason in str(err.value)
