"""Language detection (zh / en / mixed) and the stage-1 rules."""

from __future__ import annotations

import pytest

from kefu.language import detect_language, language_mix
from kefu.understanding import load_catalogue
from kefu.understanding.rules import RuleMatcher
from tests.conftest import DEMO_SHOP


@pytest.mark.parametrize(
    ("text", "mix", "reply_in"),
    [
        ("退货政策是什么？", "zh", "zh"),
        ("What is your return policy?", "en", "en"),
        ("我的order到哪了", "mixed", "zh"),
        ("refund 什么时候到账", "mixed", "zh"),
        ("Can I return the 耳机 I bought?", "mixed", "en"),
        ("X7 5G?", None, "zh"),
        ("LM26110625", None, "zh"),
    ],
)
def test_the_reply_follows_the_customers_dominant_language(text: str, mix: str | None, reply_in: str) -> None:
    assert language_mix(text) == mix
    assert detect_language(text, default="zh") == reply_in


@pytest.fixture(scope="module")
def rules() -> RuleMatcher:
    return RuleMatcher(load_catalogue(DEMO_SHOP / "intents.yaml"))


def test_transfer_requests_are_decided_by_rules(rules: RuleMatcher) -> None:
    for text in ("转人工", "人工", "我要找人工客服！", "human agent please", "Agent", "can I talk to a human?"):
        hit = RuleMatcher.decide(rules.match(text))
        assert hit is not None and hit.intent == "human_agent", text


def test_negated_keywords_do_not_fire(rules: RuleMatcher) -> None:
    assert RuleMatcher.decide(rules.match("不用转人工，我自己看看")) is None


def test_patterns_that_need_an_order_number_wait_for_one(rules: RuleMatcher) -> None:
    assert RuleMatcher.decide(rules.match("到哪了", entity_types=())) is None
    hit = RuleMatcher.decide(rules.match("LM26110625 到哪了", entity_types={"order_number"}))
    assert hit is not None and hit.intent == "track_order" and hit.kind == "pattern"
    refund = rules.match("LM26110625 退款到哪了", entity_types={"order_number"})
    assert all(h.intent != "track_order" for h in refund), "a refund question about an order is not tracking"


def test_a_remembered_message_is_still_matched_by_its_entities(rules: RuleMatcher) -> None:
    """Hits are kept per text and per entity types the patterns ask for: the same words without an order number
    found, then with one, then with an unrelated type as well."""
    text = "LM26110625 到哪了"
    assert RuleMatcher.decide(rules.match(text, entity_types=())) is None
    assert RuleMatcher.decide(rules.match(text, entity_types={"phone"})) is None
    with_order = RuleMatcher.decide(rules.match(text, entity_types={"order_number"}))
    assert with_order is not None and with_order.intent == "track_order"
    assert rules.match(text, entity_types={"order_number", "phone"}) == rules.match(text, entity_types=["order_number"])
    assert RuleMatcher.decide(rules.match(text, entity_types=())) is None


def test_long_messages_are_left_to_the_classifier(rules: RuleMatcher) -> None:
    text = "where is my order? I placed it two weeks ago and honestly I would rather cancel it and get my money back"
    assert RuleMatcher.decide(rules.match(text)) is None
