"""The Understanding service with the hashing fake embedder and the scripted LLM: stages, caching, fallback, routing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from kefu.embeddings.testing import HashingEmbedder
from kefu.errors import LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import Message
from kefu.prompts import PromptLibrary
from kefu.understanding import DialogueState, Understanding, UnderstandingConfig
from kefu.understanding.calibration import calibrate, fit_temperature, softmax
from kefu.understanding.emotion import DEFAULT_EMOTION_FILE, EmotionDetector
from kefu.understanding.types import Emotion, Entity, IntentDecision
from tests.conftest import DEMO_SHOP

NOW = datetime.fromisoformat("2026-11-20T15:00:00+08:00")

CATALOGUE = """\
version: 1
intents:
  - name: track_order
    description: {zh: 查询订单物流, en: Where an order is}
    handler: tool_agent
    requires_any: [order_number, tracking_number]
    examples:
      zh: [我的订单到哪了, 快递到哪了, 物流怎么还没更新, 包裹什么时候到, 订单发货了吗, 查一下我的快递]
      en: [where is my order, track my parcel, when will my package arrive, has my order shipped,
           tracking not updated, where is my parcel]
  - name: return_request
    description: {zh: 想退货, en: Wants to return an item}
    handler: flow
    examples:
      zh: [我要退货, 这个不想要了怎么退, 申请退货退款, 帮我退掉这个, 退货怎么操作, 能退吗]
      en: [i want to return this, how do i return it, start a return, send it back for a refund,
           return my item, can i return it]
  - name: human_agent
    description: {zh: 转人工, en: Wants a person}
    handler: handoff
    priority: 95
    rules: {keywords: [转人工], exact: [人工, agent]}
    examples:
      zh: [转人工, 找人工客服, 我要真人, 人工服务, 叫人工来, 机器人不行转人工]
      en: [human please, talk to a person, real agent, get me a human, live agent, transfer to staff]
  - name: invoice
    description: {zh: 开发票, en: Invoices}
    handler: knowledge
    examples:
      zh: [怎么开发票, 要开专票, 发票抬头写错了, 电子发票在哪下载, 发票没收到, 能开发票吗]
      en: [how do i get an invoice, vat invoice please, wrong invoice title, download my e-invoice,
           invoice not received, can you issue an invoice]
out_of_scope:
  examples:
    zh: [今天天气怎么样, 帮我写首诗, 股票会涨吗, 讲个笑话, 怎么做红烧肉, 世界最高的山]
    en: [what is the weather, write me a poem, will stocks go up, tell me a joke, how to cook pasta, tallest mountain]
"""


def build(tmp_path: Path, embedder: HashingEmbedder | None = None, **overrides: object) -> Understanding:
    intents = tmp_path / "intents.yaml"
    if not intents.exists():
        intents.write_text(CATALOGUE, encoding="utf-8")
    config = UnderstandingConfig(shop_dir=DEMO_SHOP, intents_file=intents, cache_dir=tmp_path / "cache", **overrides)  # type: ignore[arg-type]
    return Understanding.build(config, embedder or HashingEmbedder(), PromptLibrary())


def test_rules_decide_before_the_classifier(tmp_path: Path) -> None:
    understanding = build(tmp_path)
    result = understanding.analyse("转人工", now=NOW)
    assert (result.intent.intent, result.intent.stage, result.intent.rule) == ("human_agent", "rules", "转人工")
    assert result.route.handler == "handoff"
    assert result.language == "zh" and set(result.latency_ms) >= {"rules", "embed", "classify", "entities", "emotion"}


def test_classifier_names_an_intent_with_candidates_and_entities(tmp_path: Path) -> None:
    result = build(tmp_path).analyse("我的订单LM26110625到哪了", now=NOW)
    assert result.intent.stage == "classifier" and result.intent.intent == "track_order"
    assert result.intent.candidates[0].intent == "track_order"
    assert [(e.type, e.value) for e in result.entities] == [("order_number", "LM26110625")]
    assert result.route.handler == "tool_agent" and result.route.missing == ()
    trace = result.as_trace()
    json.dumps(trace)  # stored in the messages.metadata JSON column
    assert trace["entities"][0]["value"] == "LM26110625"


def test_an_order_number_does_not_decide_the_intent(tmp_path: Path) -> None:
    """Examples that quote numbers are mostly tracking ones; a return request with its order number is still one."""
    intents = tmp_path / "intents.yaml"
    intents.write_text(
        CATALOGUE.replace("查一下我的快递]", "查一下我的快递, 订单LM26110625到哪了, LM26110799发货了吗, 查LM26110957]"),
        encoding="utf-8",
    )
    result = build(tmp_path).analyse("申请退货退款 LM26110888", now=NOW)
    assert result.semantic_text == "申请退货退款"
    assert result.intent.intent == "return_request", result.intent.candidates
    assert [(e.type, e.value) for e in result.entities] == [("order_number", "LM26110888")]


def test_redacted_personal_data_does_not_change_the_reply_language(tmp_path: Path) -> None:
    understanding = build(tmp_path)
    assert understanding.analyse("[PHONE_1:5678]", now=NOW, default_language="zh").language == "zh"
    result = understanding.analyse("电话 [PHONE_1:5678]", now=NOW)
    assert result.language == "zh" and result.language_mix == "zh"
    assert [(e.type, e.value) for e in result.entities] == [("phone", "[PHONE_1:5678]")]


def test_missing_order_number_is_recorded_for_the_handler(tmp_path: Path) -> None:
    result = build(tmp_path).analyse("where is my order", now=NOW)
    assert result.intent.intent == "track_order"
    assert result.route.missing == ("order_number", "tracking_number")
    assert any("needs one of" in r for r in result.route.reasons)


def test_a_trained_model_is_cached_and_retrained_when_the_catalogue_changes(tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    build(tmp_path, embedder)
    first = embedder.embedded
    assert first > 40
    build(tmp_path, embedder)
    assert embedder.embedded == first, "second start: model and example vectors come from the cache"
    intents = tmp_path / "intents.yaml"
    intents.write_text(CATALOGUE.replace("能开发票吗", "开一张发票给我"), encoding="utf-8")
    understanding = build(tmp_path, embedder)
    assert embedder.embedded == first + 1, "only the changed example is embedded again"
    assert understanding.model is not None and "开一张发票给我" in understanding.model.example_texts


def test_thresholds_can_be_overridden_by_configuration(tmp_path: Path) -> None:
    understanding = build(tmp_path, oos_threshold=0.99)
    assert understanding.thresholds is not None and understanding.thresholds.oos == 0.99
    assert understanding.analyse("我要退货", now=NOW).intent.intent == "oos", "nothing is that certain"


def test_calibration_learns_a_temperature_and_an_oos_threshold() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    logits = rng.normal(0, 1, (150, 3)) * 3
    logits[np.arange(150), y] += 4.0  # right, but over-confident
    assert fit_temperature(logits, y) > 1.0
    thresholds = calibrate(logits, y, oos_index=2)
    assert 0.0 <= thresholds.oos <= 0.9 and 0.0 <= thresholds.accept <= 1.0
    assert thresholds.validation is not None and thresholds.validation["oos_recall"] > 0.5
    probs = softmax(logits, thresholds.temperature)
    assert np.allclose(probs.sum(axis=1), 1.0)


async def test_llm_fallback_decides_only_unsure_turns_with_a_json_schema(tmp_path: Path) -> None:
    understanding = build(tmp_path, accept_threshold=1.01)  # every classifier decision counts as unsure
    llm = ScriptedLLM([json.dumps({"intent": "invoice", "confidence": 0.8})])
    history = [Message("user", "我上周买了耳机")]
    result = await understanding.analyse_async("那个票据的事情", history, NOW, llm=llm)
    assert (result.intent.intent, result.intent.stage, result.intent.confidence) == ("invoice", "llm", 0.8)
    assert result.route.handler == "knowledge" and "llm" in result.latency_ms
    (call,) = llm.calls
    schema = call.options.json_schema
    assert schema is not None and "oos" in schema["properties"]["intent"]["enum"]
    assert "invoice" in schema["properties"]["intent"]["enum"]
    assert "我上周买了耳机" in call.messages[0].content, "the conversation is part of the prompt"
    assert call.messages[-1].content == "那个票据的事情"
    llm.assert_complete()

    confident = build(tmp_path)
    rule_turn = await confident.analyse_async("转人工", (), NOW, llm=llm)
    assert rule_turn.intent.stage == "rules" and len(llm.calls) == 1, "a confident turn never asks the LLM"


async def test_a_failing_or_rambling_llm_leaves_the_classifiers_answer(tmp_path: Path) -> None:
    understanding = build(tmp_path, accept_threshold=1.01)
    llm = ScriptedLLM(
        ["I think it is about invoices!", LLMUnavailableError("down"), '{"intent": "weather", "confidence": 1}']
    )
    for _ in range(3):
        result = await understanding.analyse_async("我要退货", (), NOW, llm=llm)
        assert result.intent.stage == "classifier" and result.intent.intent == "return_request"
        assert "LLM fallback failed" in result.intent.reason
    llm.assert_complete()


def test_an_angry_customer_reaches_a_human_faster(tmp_path: Path) -> None:
    understanding = build(tmp_path)
    router = understanding.router
    decision = IntentDecision("track_order", 0.9, "classifier")
    order = [Entity("order_number", "LM26110625", "LM26110625")]
    calm = router.route(decision, order, Emotion(), DialogueState())
    assert calm.handler == "tool_agent"
    angry = router.route(decision, order, Emotion("angry", 0.95), DialogueState())
    assert angry.handler == "tool_agent", "one angry message alone is not enough"
    again = router.route(decision, order, Emotion("angry", 0.95), DialogueState(negative_streak=1))
    assert again.handler == "handoff" and any("escalated" in r for r in again.reasons)
    urgent = router.route(decision, order, Emotion("angry", 0.95, urgent=True), DialogueState())
    assert urgent.handler == "handoff"
    oos = router.route(IntentDecision("oos", 0.8, "classifier"), [], Emotion(), DialogueState())
    assert oos.handler == "oos"
    unsure = router.route(
        IntentDecision("human_agent", 0.4, "classifier", needed_llm=True), [], Emotion(), DialogueState()
    )
    assert unsure.handler == "knowledge", "nobody is transferred on a guess"
    sure = router.route(IntentDecision("human_agent", 0.97, "classifier"), [], Emotion(), DialogueState())
    assert sure.handler == "handoff"


def test_emotion_lexicon_and_model() -> None:
    lexicon_only = EmotionDetector.load(DEFAULT_EMOTION_FILE, None)
    assert lexicon_only.detect("你们就是骗子，垃圾服务", None).label == "angry"
    assert lexicon_only.detect("this is ridiculous, unacceptable!!", None).label == "angry"
    assert lexicon_only.detect("有点失望，等了好久", None).label == "negative"
    assert lexicon_only.detect("太好了，谢谢你", None).label == "positive"
    assert lexicon_only.detect("退货政策是什么", None).label == "neutral"
    urgent = lexicon_only.detect("急！明天要用，麻烦尽快发货", None)
    assert urgent.urgent and "急" in urgent.cues
    assert not lexicon_only.detect("what's today's promotion", None).urgent
    assert lexicon_only.detect("a damnation sermon", None).label == "neutral", "whole words only"
    assert lexicon_only.detect("you scammers", None).label == "angry", "plurals count"


@pytest.mark.parametrize("embedder_name", ["hashing"])
def test_emotion_model_trains_from_the_bundled_examples(tmp_path: Path, embedder_name: str) -> None:
    from kefu.embeddings.cache import CachedEmbedder

    embedder = CachedEmbedder(HashingEmbedder(), tmp_path)
    detector = EmotionDetector.load(DEFAULT_EMOTION_FILE, embedder)
    vector = embedder.embed_queries(["你们什么垃圾服务"])[0]
    assert detector.detect("你们什么垃圾服务", vector).negative


TWINS = """\
version: 1
intents:
  - name: invoice
    description: {zh: 开发票, en: Invoices}
    handler: knowledge
    examples:
      zh: [怎么开发票, 要开专票, 电子发票在哪下载, 能开发票吗]
      en: [how do i get an invoice, vat invoice please, download my e-invoice, can you issue an invoice]
  - name: invoice_rules
    description: {zh: 发票规则, en: Invoice rules}
    handler: faq
    examples:
      zh: [怎么开发票, 要开专票, 电子发票在哪下载, 能开发票吗]
      en: [how do i get an invoice, vat invoice please, download my e-invoice, can you issue an invoice]
  - name: invoice_change
    description: {zh: 改发票, en: Change an invoice}
    handler: flow
    examples:
      zh: [发票抬头写错了要改, 帮我重开发票, 发票信息改一下, 重新开一张发票]
      en: [fix my invoice title, reissue my invoice, change the invoice details, issue the invoice again]
  - name: return_request
    description: {zh: 想退货, en: Wants to return an item}
    handler: flow
    examples:
      zh: [我要退货, 这个不想要了怎么退, 申请退货退款, 帮我退掉这个]
      en: [i want to return this, how do i return it, start a return, send it back for a refund]
out_of_scope:
  examples:
    zh: [今天天气怎么样, 帮我写首诗, 股票会涨吗, 讲个笑话]
    en: [what is the weather, write me a poem, will stocks go up, tell me a joke]
"""


async def test_an_unsure_turn_whose_likely_intents_are_all_answered_from_knowledge_skips_the_llm(
    tmp_path: Path,
) -> None:
    """Two intents with the same examples cannot be told apart; both are answered from knowledge, so the LLM
    would not change the reply. A tie that involves a flow still asks it."""
    (tmp_path / "intents.yaml").write_text(TWINS, encoding="utf-8")
    # The hashing test embedder spreads probability thinly: the twins get about 0.27 each, so at 0.5 every
    # decision is unsure and the twins together reach it.
    understanding = build(tmp_path, accept_threshold=0.5)
    llm = ScriptedLLM([json.dumps({"intent": "invoice_change", "confidence": 0.9})] * 2)

    tie = await understanding.analyse_async("怎么开发票", (), NOW, llm=llm)
    assert tie.intent.stage == "classifier" and not tie.intent.needed_llm and not llm.calls
    assert set(tie.intent.alike) == {"invoice", "invoice_rules"} and tie.intent.intent in tie.intent.alike
    assert tie.route.handler in ("faq", "knowledge") and "no LLM needed" in tie.intent.reason
    assert tie.intent.as_dict()["alike"] == list(tie.intent.alike)

    flow_tie = await understanding.analyse_async("帮我重开发票", (), NOW, llm=llm)
    assert flow_tie.intent.candidates[0].intent == "invoice_change", "a flow among the likely intents"
    assert flow_tie.intent.stage == "llm" and flow_tie.intent.alike == () and len(llm.calls) == 1

    understanding.settle_alike = False  # llm_fallback_when_alike: true
    asked = await understanding.analyse_async("怎么开发票", (), NOW, llm=llm)
    assert asked.intent.stage == "llm" and asked.intent.alike == () and len(llm.calls) == 2
    llm.assert_complete()


def test_handled_alike_needs_every_likely_intent_answered_from_knowledge(tmp_path: Path) -> None:
    (tmp_path / "intents.yaml").write_text(TWINS, encoding="utf-8")
    router = build(tmp_path).router
    assert router.handled_alike([("invoice", 0.6), ("invoice_rules", 0.35), ("invoice_change", 0.05)], 0.9) == (
        "invoice",
        "invoice_rules",
    )
    assert router.handled_alike([("invoice", 0.6), ("invoice_change", 0.35)], 0.9) == (), "a flow decides differently"
    assert router.handled_alike([("invoice", 0.6), ("oos", 0.35)], 0.9) == (), "out of scope is answered differently"
    assert router.handled_alike([("invoice", 0.5), ("invoice_rules", 0.3)], 0.9) == (), "the rest may be anything"


def test_a_message_seen_lately_is_classified_once_and_a_new_threshold_is_not_served_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    understanding = build(tmp_path)
    assert understanding.model is not None
    calls: list[str] = []
    predict = type(understanding.model).predict

    def counted(model: object, vector: np.ndarray, text: str, **kw: object) -> object:
        calls.append(text)
        return predict(model, vector, text, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(type(understanding.model), "predict", counted)
    first = understanding.analyse("快递到哪了", now=NOW)
    again = understanding.analyse("快递到哪了", now=NOW)
    assert calls == ["快递到哪了"]
    assert (again.intent, again.emotion, again.route) == (first.intent, first.emotion, first.route)
    understanding.analyse("快递到哪了呀", now=NOW)
    assert len(calls) == 2  # another message is classified
    understanding.model.thresholds = replace(understanding.model.thresholds, accept=0.99)
    unsure = understanding.analyse("快递到哪了", now=NOW)
    assert len(calls) == 3 and unsure.intent.needed_llm  # classified again under the new threshold
