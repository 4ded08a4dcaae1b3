"""The real thing: the bundled embedder on the demo shop's catalogue, scored on its held-apart test set.

These are quality assertions (the issue's targets), not timing: latency is measured by `make bench`.
"""

from __future__ import annotations

import pytest

from kefu.config import EmbeddingSettings
from kefu.embeddings.cache import CachedEmbedder
from kefu.embeddings.registry import build_embedder
from kefu.eval.intents import IntentEvalReport, run_intent_eval
from tests.conftest import DEMO_SHOP, UNDERSTANDING_CACHE


@pytest.fixture(scope="module")
def report() -> IntentEvalReport:
    # The test utterances' vectors are cached too (public test data, not customer text), so a second run
    # of the suite spends its time on classification rather than on embedding the same 700 texts again.
    embedder = CachedEmbedder(build_embedder(EmbeddingSettings()), UNDERSTANDING_CACHE)  # the engine that ships
    try:
        return run_intent_eval(
            DEMO_SHOP / "intents.yaml", DEMO_SHOP / "eval" / "intents_test.csv", embedder, cache_dir=UNDERSTANDING_CACHE
        )
    finally:
        embedder.save()


def test_demo_test_set_is_large_bilingual_and_apart_from_the_catalogue() -> None:
    import csv

    import yaml

    with (DEMO_SHOP / "eval" / "intents_test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 600
    assert sum(r["label"] == "oos" for r in rows) >= 80
    catalogue = yaml.safe_load((DEMO_SHOP / "intents.yaml").read_text(encoding="utf-8"))
    examples = {
        t.lower()
        for section in [*catalogue["intents"], catalogue["out_of_scope"]]
        for lang in ("zh", "en")
        for t in section["examples"][lang]
    }
    assert not [r["text"] for r in rows if r["text"].lower() in examples], "test utterances must be held apart"


def test_in_scope_accuracy_and_out_of_scope_recall_meet_the_targets(report: IntentEvalReport) -> None:
    assert report.in_scope_accuracy >= 0.95, report.errors
    assert report.oos_recall is not None and report.oos_recall >= 0.85, report.errors
    assert report.oos_precision is not None and report.oos_precision >= 0.85
    assert report.macro_f1 >= 0.9
    assert report.llm_fallback_share < 0.3, "most turns need no LLM"


def test_every_stage_is_used_and_worst_confusions_are_reported(report: IntentEvalReport) -> None:
    assert set(report.stage_share) == {"rules", "classifier"}
    assert report.worst_confusions and {"gold", "predicted", "count"} <= set(report.worst_confusions[0])


def test_an_order_number_in_the_message_does_not_change_its_intent(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Customers paste their order number beside any question. With the number read as part of the message, the
    classifier took most such questions for order tracking (65% in-scope accuracy, 41% out-of-scope recall on
    this set); with the number taken out but its label ("订单号", "(order …)") kept, 89% and 82%, and a third of
    the turns needed the LLM fallback. Without both, a number changes little."""
    import csv
    import random

    rng = random.Random(7)
    with (DEMO_SHOP / "eval" / "intents_test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    test = tmp_path_factory.mktemp("numbers") / "intents_test_with_numbers.csv"
    with test.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for row in rows:
            number = f"LM2611{rng.randrange(10_000):04d}"  # the demo shop's format (shop.yaml)
            zh = any("\u4e00" <= c <= "\u9fff" for c in row["text"])
            text = f"{row['text']} 订单号{number}" if zh else f"{row['text']} (order {number})"
            writer.writerow([text, row["label"]])
    embedder = CachedEmbedder(build_embedder(EmbeddingSettings()), UNDERSTANDING_CACHE)
    try:
        report = run_intent_eval(DEMO_SHOP / "intents.yaml", test, embedder, cache_dir=UNDERSTANDING_CACHE)
    finally:
        embedder.save()
    assert report.in_scope_accuracy >= 0.93, report.errors
    assert report.oos_recall is not None and report.oos_recall >= 0.8, report.errors
    assert report.llm_fallback_share < 0.25


def test_a_greeting_in_front_of_a_question_does_not_change_its_intent(
    report: IntentEvalReport, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Customers open with a greeting: "你好，满多少包邮？", "Hi, where's my package?". Read whole, such a question
    is half a greeting to the classifier: on this set, prefixed so, 30% of the turns had needed the LLM fallback (15%
    without the greeting) and in-scope accuracy was 93.8% (96.7%). The classifier now reads what follows the
    greeting (`understanding/data/openers.yaml`)."""
    import csv
    import random

    rng = random.Random(11)
    openers = {
        "zh": ["你好，", "您好！", "亲，", "在吗？", "请问", "麻烦问一下，", "哈喽～", "你好 "],
        "en": ["Hi, ", "Hello! ", "Hey there, ", "Good morning, ", "Quick question: ", "Excuse me, ", "hi "],
    }
    with (DEMO_SHOP / "eval" / "intents_test.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] not in ("greeting", "thanks_goodbye")]
    test = tmp_path_factory.mktemp("greetings") / "intents_test_with_greetings.csv"
    with test.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for row in rows:
            zh = any("\u4e00" <= c <= "\u9fff" for c in row["text"])
            writer.writerow([rng.choice(openers["zh" if zh else "en"]) + row["text"], row["label"]])
    embedder = CachedEmbedder(build_embedder(EmbeddingSettings()), UNDERSTANDING_CACHE)
    try:
        greeted = run_intent_eval(DEMO_SHOP / "intents.yaml", test, embedder, cache_dir=UNDERSTANDING_CACHE)
    finally:
        embedder.save()
    assert greeted.in_scope_accuracy >= report.in_scope_accuracy - 0.01, greeted.errors
    assert greeted.oos_recall is not None and greeted.oos_recall >= 0.85, greeted.errors
    assert greeted.llm_fallback_share <= report.llm_fallback_share + 0.02
