"""Sentences, numbers and citation markers as the chunker and the grounding check see them."""

from __future__ import annotations

from kefu.knowledge.grounding import GroundingChecker, cited_numbers, extract_numbers, strip_markers
from kefu.knowledge.text import complete_prefix, plain_text, slugify, split_sentences
from kefu.knowledge.tokenizer import Tokenizer


def test_chinese_and_english_sentences_split_at_their_own_punctuation() -> None:
    text = "签收次日起 7 天内可以退货。耳机拆封仍可退！Refunds take 1-3 days. Gift cards: ¥1.5 off 7.5% fee"
    assert split_sentences(text) == [
        "签收次日起 7 天内可以退货。",
        "耳机拆封仍可退！",
        "Refunds take 1-3 days.",
        "Gift cards: ¥1.5 off 7.5% fee",
    ]


def test_a_stream_releases_only_whole_sentences() -> None:
    assert complete_prefix("7 天内可以退货。耳机拆") == len("7 天内可以退货。")
    assert complete_prefix("Refunds take 1.5") == 0
    assert complete_prefix("Refunds take 1-3 days. They") == len("Refunds take 1-3 days.")


def test_numbers_are_compared_in_one_canonical_form() -> None:
    assert extract_numbers("七天无理由，十五天质量问题，两年保修") >= {"7", "15", "2"}
    assert extract_numbers("¥1,799.00 over 6 instalments, 7.5% fee, ships before 16:00") == {
        "1799",
        "6",
        "7.5",
        "16:00",
    }
    assert extract_numbers("seven days, twice") == {"7", "2"}
    # Chinese numerals count only before a unit: 一下 / 统一 are words, not numbers.
    assert extract_numbers("稍等一下，全国统一运费") == set()


def test_citation_markers_are_read_and_removed() -> None:
    answer = "签收后 7 天内可以退货 [1]。运费由买家承担【2】。Refunds in 1-3 days [1, 3]."
    assert cited_numbers(answer) == [1, 2, 3]
    assert strip_markers(answer) == "签收后 7 天内可以退货。运费由买家承担。Refunds in 1-3 days."


def test_an_answer_is_checked_sentence_by_sentence_against_what_it_cites() -> None:
    checker = GroundingChecker(Tokenizer())
    passages = ["签收次日起 7 天内，商品完好可申请无理由退货，退回运费由买家承担。", "质量问题 15 天内可换货。"]
    ok = checker.check("签收 7 天内可以无理由退货 [1]。质量问题 15 天内可以换货 [2]。", passages)
    assert ok.supported and ok.cited == (1, 2)
    # 15 is in passage 2, but the sentence cites passage 1 for it.
    wrong_source = checker.check("签收 15 天内可以无理由退货 [1]。", passages)
    assert not wrong_source.supported and wrong_source.sentences[0].missing_numbers == ("15",)
    invented = checker.check("我们在北京有 3 家线下门店，营业到 22:00。", passages)
    assert not invented.supported
    assert not checker.check("可以退货 [7]。", passages).supported  # cites a passage that does not exist


def test_headings_become_anchors_and_markdown_becomes_plain_text() -> None:
    assert slugify("7 天无理由退货") == "7-天无理由退货"
    assert slugify("Electronic normal VAT invoice (普通发票)") == "electronic-normal-vat-invoice-普通发票"
    assert plain_text("| A | **B** |\n| --- | --- |\n| 1 | [link](http://x) |") == "A B\n1 link"


def test_the_term_set_of_several_texts_is_that_of_the_texts_joined() -> None:
    tokenizer = Tokenizer()
    passages = ("七天无理由退货，运费由买家承担。", "Returns within 7 days; shipping v2.1 is free", "数电专票开具")

    together = tokenizer.term_set(*passages)

    assert together == set(tokenizer.terms(" ".join(passages)))
    assert all(set(tokenizer.terms(p)) <= together for p in passages) and "v2.1" in together
    assert tokenizer.term_set(passages[0]) is tokenizer.term_set(passages[0])  # remembered, not cut again
