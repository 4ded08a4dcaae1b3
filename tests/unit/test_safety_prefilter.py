"""The RE2 prefilter in front of the injection rules, personal data and dates: it never hides a pattern that matches,
so verdicts and findings are unchanged."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kefu.safety import injection, pii
from kefu.safety.normalise import read_for_detection
from kefu.safety.pii import PiiDetector
from kefu.safety.prefilter import PatternSet, T, widen_for_re2
from kefu.understanding.entities import dates
from kefu.understanding.entities.dates import DateExtractor

REDTEAM = Path(__file__).resolve().parents[1] / "redteam"
CORPUS = [
    json.loads(line)["text"]
    for path in sorted(REDTEAM.glob("*.jsonl"))
    for line in path.read_text(encoding="utf-8").splitlines()
    if line.strip()
]
RULES = [pattern for pattern, _, _ in injection._RULES]


def matching_rules(text: str) -> set[int]:
    return {i for i, pattern in enumerate(RULES) if pattern.search(text)}


def test_the_corpus_is_the_red_team_sets() -> None:
    assert len(CORPUS) > 1000


def test_every_rule_that_matches_a_red_team_or_ordinary_message_is_a_candidate() -> None:
    misses = []
    for text in CORPUS:
        for form in {text, read_for_detection(text).combined}:
            candidates = injection._RULE_SET.candidates(form)
            assert candidates is not None, form
            missing = matching_rules(form) - set(candidates)
            if missing:
                misses.append((form, sorted(missing)))
    assert not misses


def test_scores_with_the_prefilter_equal_scores_searching_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = [read_for_detection(text) for text in CORPUS]
    filtered = [injection.reading_score(r) for r in readings]
    monkeypatch.setattr(injection._RULE_SET, "candidates", lambda text: None)
    assert [injection.reading_score(r) for r in readings] == filtered
    # The attacks do trip rules: the comparison is not between two empty lists of reasons.
    assert sum(1 for score in filtered if score.score >= 1.0) > 300


# Texts that tempt every difference between RE2 and Python: CJK letters beside ASCII words (Python's \b and \w are
# Unicode), full-width and other Unicode digits (\d), ideographic and no-break spaces (\s), newlines (^ and $),
# case, and fragments of the attacks themselves.
_FRAGMENTS = sorted({word for text in CORPUS for word in re.split(r"[\s,.!?，。！？]+", text) if 1 < len(word) < 12})
_PIECES = st.one_of(
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(["\u3000", "\xa0", "\n", " ", "\t", "\u2028", "\x85", "请", "的", "é", "_", "３", "٣", "5"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=14), st.booleans())
def test_any_text_keeps_every_matching_rule_a_candidate(pieces: list[str], upper: bool) -> None:
    text = "".join(pieces)
    text = text.upper() if upper else text
    candidates = injection._RULE_SET.candidates(text)
    if candidates is not None:
        assert matching_rules(text) <= set(candidates)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"\bcafé\b", "un café."),  # Python's \b is Unicode: é is a word character; RE2's \b would not match
        (r"\b退款", "申请 退款"),
        (r"(?<!我的)客户名单", "导出全部客户名单"),  # lookbehind dropped: RE2 matches more, Python decides
        (r"\d{3}元", "退款３００元"),  # full-width digits are \d in Python
        (r"退款\s+双倍", "退款\u3000双倍"),  # the ideographic space is \s in Python
        (r"^confirm$", "confirm\n"),  # Python's $ also matches before a final newline; RE2's, at every line
        (r"\w+ team", "运营 team"),  # CJK letters are \w in Python
        (r"[^\w\s]{3}", "!!!"),
        (r"客服(?=机器人)", "客服机器人"),
    ],
)
def test_widened_patterns_match_wherever_python_does(pattern: str, text: str) -> None:
    compiled = re.compile(pattern, re.IGNORECASE)
    pattern_set = PatternSet([compiled])
    assert compiled.search(text) is not None
    assert pattern_set.candidates(text) == [0]


def test_a_patterns_flags_are_kept_or_it_is_always_searched() -> None:
    dotall = PatternSet([re.compile(r"ignore.+rules", re.DOTALL)])
    assert dotall.candidates("ignore\nthe rules") == [0]  # . crosses lines under DOTALL, in RE2 too
    verbose = PatternSet([re.compile(r"ignore \s+ rules  # comment", re.VERBOSE)])
    assert verbose.candidates("nothing alike") == [0]


def test_what_re2_cannot_read_falls_back_to_every_rule() -> None:
    pattern_set = PatternSet([re.compile(r"(a)\1"), re.compile("ignore")])
    assert pattern_set.candidates("aa") == [0]  # a backreference is beyond RE2: that rule is always searched
    assert pattern_set.candidates("ignore") == [0, 1]
    assert pattern_set.candidates("lone \ud800 surrogate") is None  # not UTF-8: search with every rule


def test_the_translation_keeps_literals_and_drops_only_assertions() -> None:
    assert widen_for_re2(r"\bfoo[\w-]{0,3}(?!bar)\b") == r"(?m)foo[\p{L}\p{N}_-]*"
    assert widen_for_re2(r"[\]\b]x\.") == r"(?m)[\]\x{08}]x\."  # \b in a class is a backspace


def test_python_escapes_by_code_point_become_re2s() -> None:
    assert widen_for_re2(r"[\u4e00-\u9fff]{2,7}(?:市|区)\U0001F600") == r"(?m)[\x{4e00}-\x{9fff}]*(?:市|区)\x{0001F600}"
    address = re.compile(r"[\u4e00-\u9fff]{1,7}(?:路|街)\d+号")
    pattern_set = PatternSet([address])
    assert pattern_set._always == []  # RE2 took it: before, `\u` made it always searched
    assert pattern_set.candidates("寄到文三路90号") == [0]
    assert pattern_set.candidates("退货政策是什么") == []


# --- the other users of the prefilter: personal data and dates ----------------------------------------------------

DEMO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "demo_shop"
_SHOP_TEXTS = [
    paragraph
    for path in sorted((DEMO_SHOP / "knowledge").rglob("*.md"))
    for paragraph in path.read_text(encoding="utf-8").split("\n\n")
] + [
    json.loads(line)["text"]
    for line in (DEMO_SHOP / "eval" / "entities_test.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
_PERSONAL_AND_DATES = [
    "我的手机是 138 1234 5678，邮箱 li.lei@example.com，身份证 11010519491231002X",
    "卡号 6222 0212 3456 7890 128，座机 (0571)87654321-12，护照 E12345678",
    "寄到浙江省杭州市西湖区文三路90号5栋301室",
    "Ship it to 221 Baker Street, Apt 4B by next Friday",
    "2026年11月3日下的单，下周三能到吗？3天前催过，12/25 之前要",
    "I ordered on Nov 3rd, 2026 and it was due 2 weeks ago, or in 3 days, the day after tomorrow?",
    "上个月15号买的，这个月20日还没到；10号 not 10号码",
]
_FRAGMENTS_PII = [*_PERSONAL_AND_DATES, "LM26110625", "0827", "13851335197", "号", "路", "Street", "周三", "Monday"]


class _NoFilter:
    """A prefilter that knows nothing: every pattern is searched."""

    def candidates(self, text: str) -> None:
        return None

    def select(self, items: Sequence[T], text: str) -> Sequence[T]:
        return items


def _findings(text: str) -> tuple[object, ...]:
    return (PiiDetector()._find(text), DateExtractor().extract(text, datetime(2026, 12, 7)))


def _findings_searching_everything(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[object, ...]:
    with monkeypatch.context() as patched:
        patched.setattr(pii, "PatternSet", lambda patterns: _NoFilter())
        patched.setattr(dates, "_PREFILTER", _NoFilter())
        return _findings(text)


def test_personal_data_and_dates_are_found_as_searching_every_pattern_finds_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    differ = [
        text
        for text in _SHOP_TEXTS + _PERSONAL_AND_DATES
        if _findings(text) != _findings_searching_everything(monkeypatch, text)
    ]
    assert differ == []


def test_the_examples_hold_what_they_test() -> None:
    kinds = {m.kind for text in _PERSONAL_AND_DATES for m in PiiDetector().find(text)}
    assert kinds == {"PHONE", "EMAIL", "ID", "CARD", "LANDLINE", "PASSPORT", "ADDRESS"}
    dates = [e for text in _PERSONAL_AND_DATES for e in DateExtractor().extract(text, datetime(2026, 12, 7))]
    assert len(dates) >= 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS_PII), _PIECES), min_size=1, max_size=8))
def test_any_mix_finds_what_searching_every_pattern_finds(pieces: list[str]) -> None:
    text = "".join(pieces)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _findings(text) == _findings_searching_everything(monkeypatch, text)
