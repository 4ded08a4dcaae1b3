"""`Understanding`: one object, built once at start-up, that analyses a customer message in milliseconds.

analyse(text, history, now) runs language detection, entities, stage-1 rules, the stage-2 embedding
classifier (with out-of-scope detection), emotion and the router; `analyse_async` adds the stage-3
LLM fallback for the turns the classifier is unsure about.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from kefu.config import EmbeddingSettings, Settings
from kefu.embeddings.base import Embedder
from kefu.embeddings.cache import CachedEmbedder
from kefu.embeddings.registry import build_embedder
from kefu.embeddings.shared import embed_query
from kefu.language import Language, detect_language, language_mix
from kefu.llm.base import LLMBackend
from kefu.llm.types import Message
from kefu.prompts import PromptLibrary
from kefu.understanding.calibration import Thresholds
from kefu.understanding.catalogue import IntentCatalogue, load_catalogue
from kefu.understanding.classifier import (
    IntentModel,
    Prediction,
    TrainingOptions,
    load_cached_model,
    model_cache_key,
    save_model,
    train_intent_model,
)
from kefu.understanding.emotion import DEFAULT_EMOTION_FILE, EmotionDetector
from kefu.understanding.entities import EntityExtractor, load_shop_formats
from kefu.understanding.llm_fallback import LLMIntentFallback
from kefu.understanding.openers import DEFAULT_OPENERS_FILE, Openers
from kefu.understanding.router import Router, RouterWeights
from kefu.understanding.rules import RuleMatcher
from kefu.understanding.types import (
    OOS_LABEL,
    DialogueState,
    Emotion,
    IntentDecision,
    IntentScore,
    UnderstandingResult,
)

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*?_\d+(?::[0-9Xx]{4})?\]")
MEMO_SIZE = 2048
"""Messages whose classification and emotion are kept (see `Understanding._read`)."""


@dataclass(frozen=True, slots=True)
class UnderstandingConfig:
    """Where the data lives and how the stages decide; built from `UnderstandingSettings`."""

    shop_dir: Path | None = None
    intents_file: Path | None = None
    emotion_file: Path = DEFAULT_EMOTION_FILE
    openers_file: Path = DEFAULT_OPENERS_FILE
    cache_dir: Path | None = None
    training: TrainingOptions = field(default_factory=TrainingOptions)
    oos_threshold: float | None = None
    """Overrides the calibrated out-of-scope threshold."""
    accept_threshold: float | None = None
    """Overrides the calibrated threshold below which the LLM fallback is asked."""
    rules_max_chars: int = 60
    llm_fallback: bool = True
    llm_timeout_s: float = 8.0
    settle_alike: bool = True
    """The inverse of `UnderstandingSettings.llm_fallback_when_alike`."""
    router: RouterWeights = field(default_factory=RouterWeights)


class Understanding:
    """Intent, entities, emotion, language and the routing decision for one customer message."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        entities: EntityExtractor,
        emotion: EmotionDetector,
        router: Router,
        catalogue: IntentCatalogue | None = None,
        model: IntentModel | None = None,
        rules: RuleMatcher | None = None,
        fallback: LLMIntentFallback | None = None,
        timezone: str = "Asia/Shanghai",
        intents_file: Path | None = None,
        settle_alike: bool = True,
        openers: Openers | None = None,
    ) -> None:
        self.embedder = embedder
        self.openers = openers or Openers(())
        """Greetings and preambles the classifier reads past ("你好，退货政策是什么？" is about returns)."""
        self.entities = entities
        self.emotion = emotion
        self.router = router
        self.catalogue = catalogue
        self.model = model
        self.rules = rules
        self.fallback = fallback
        self.timezone = ZoneInfo(timezone)
        self.settle_alike = settle_alike
        """An unsure classifier whose likely intents are all answered from knowledge keeps its guess (no LLM)."""
        self.intents_file = intents_file
        """Where the catalogue was loaded from (errors found later, e.g. in `tools:`, name its lines)."""
        self._read_lately: OrderedDict[
            str, tuple[IntentModel | None, tuple[float, float, float] | None, Prediction | None, Emotion]
        ] = OrderedDict()
        self._read_lock = threading.Lock()

    @classmethod
    def build(cls, config: UnderstandingConfig, embedder: Embedder, prompts: PromptLibrary) -> Understanding:
        """Load the catalogue, train or load the cached classifier, build the other parts (blocking, seconds)."""
        started = time.perf_counter()
        cached = CachedEmbedder(embedder, config.cache_dir)
        formats = load_shop_formats(config.shop_dir)
        entities = EntityExtractor.for_shop(config.shop_dir)
        emotion = EmotionDetector.load(config.emotion_file, cached)
        openers = Openers.load(config.openers_file)
        intents_file = config.intents_file
        if intents_file is None and config.shop_dir is not None and (config.shop_dir / "intents.yaml").is_file():
            intents_file = config.shop_dir / "intents.yaml"
        catalogue = model = rules = fallback = None
        if intents_file is not None:
            catalogue = load_catalogue(intents_file)
            model = cls._model(catalogue, cached, config, entities)
            rules = RuleMatcher(catalogue, max_chars=config.rules_max_chars)
            if config.llm_fallback:
                fallback = LLMIntentFallback(catalogue, prompts, timeout_s=config.llm_timeout_s)
        log.info(
            "understanding ready in %.1fs: %s intents, embedder %s",
            time.perf_counter() - started,
            len(catalogue.intents) if catalogue else 0,
            embedder.name,
        )
        return cls(
            embedder=embedder,
            entities=entities,
            emotion=emotion,
            router=Router(catalogue, config.router),
            catalogue=catalogue,
            model=model,
            rules=rules,
            fallback=fallback,
            timezone=formats.locale.timezone,
            intents_file=intents_file,
            settle_alike=config.settle_alike,
            openers=openers,
        )

    @staticmethod
    def _model(
        catalogue: IntentCatalogue, embedder: CachedEmbedder, config: UnderstandingConfig, entities: EntityExtractor
    ) -> IntentModel:
        # The examples are read as messages are: without the shop's reference numbers.
        identifiers = entities.identifiers
        data = "|".join((catalogue.fingerprint(), *identifiers.reference_patterns))
        key = model_cache_key(data, embedder.name, config.training)
        model = load_cached_model(config.cache_dir, key)
        if model is None:
            texts, labels = catalogue.training_rows()
            texts = [identifiers.without_references(t) for t in texts]
            model = train_intent_model(texts, labels, embedder, config.training)
            save_model(config.cache_dir, key, model)
            log.info("intent classifier trained: %s", model.thresholds.validation)
        if config.oos_threshold is not None:
            model.thresholds = replace(model.thresholds, oos=config.oos_threshold)
        if config.accept_threshold is not None:
            model.thresholds = replace(model.thresholds, accept=config.accept_threshold)
        return model

    @property
    def thresholds(self) -> Thresholds | None:
        return self.model.thresholds if self.model else None

    def now(self) -> datetime:
        """The current time in the shop's time zone (relative dates are resolved against it)."""
        return datetime.now(self.timezone)

    def analyse(
        self,
        text: str,
        history: Sequence[Message] = (),
        now: datetime | None = None,
        *,
        state: DialogueState | None = None,
        default_language: Language = "en",
    ) -> UnderstandingResult:
        """Everything but the LLM fallback; a turn the classifier is unsure about has `intent.needed_llm`."""
        result, _, _ = self._analyse(text, history, now or self.now(), state or DialogueState(), default_language)
        return result

    async def analyse_async(
        self,
        text: str,
        history: Sequence[Message] = (),
        now: datetime | None = None,
        *,
        state: DialogueState | None = None,
        llm: LLMBackend | None = None,
        default_language: Language = "en",
        settled: Callable[[UnderstandingResult], str | None] | None = None,
    ) -> UnderstandingResult:
        """`analyse`, then the LLM fallback for a low-confidence turn when a classification LLM is given.

        `settled(result)`: why the turn needs no intent from the LLM even so (the message answers what an open flow
        asked, which takes it whatever its intent), or None; only asked when the classifier is unsure.
        """
        state = state or DialogueState()
        # Embedding the message is CPU work outside the GIL (milliseconds): a thread runs the model, unless another
        # stage or turn already has, while the event loop serves others. The rest, Python through and through, runs
        # here: on a thread it had only waited for the event loop to let go of the GIL.
        semantic = self.semantic_text(text)
        started = time.perf_counter()
        embedded = await embed_query(self.embedder, semantic)
        embedded_ms = (time.perf_counter() - started) * 1000
        result, vector, prediction = self._analyse(
            text, history, now or self.now(), state, default_language, embedded=(semantic, embedded, embedded_ms)
        )
        if not result.intent.needed_llm or llm is None or self.fallback is None or self.model is None:
            return result
        why = settled(result) if settled is not None else None
        if why is not None:
            return replace(result, intent=replace(result.intent, reason=f"{result.intent.reason}; no LLM asked: {why}"))
        assert vector is not None and prediction is not None
        started = time.perf_counter()
        candidates = [label for label, _ in prediction.ranked if label != OOS_LABEL]
        examples = self.model.nearest_examples(vector, candidates[:4], per_label=2)
        verdict = await self.fallback.classify(llm, text, candidates, examples, history, result.language)
        latency = {**result.latency_ms, "llm": (time.perf_counter() - started) * 1000}
        if verdict.intent is None:
            decision = replace(result.intent, reason=f"{result.intent.reason}; LLM fallback failed: {verdict.error}")
        else:
            decision = replace(
                result.intent,
                intent=verdict.intent,
                confidence=verdict.confidence,
                stage="llm",
                reason=f"classifier unsure (top {prediction.top_probability:.2f}); LLM chose {verdict.intent}",
            )
        route = self.router.route(decision, result.entities, result.emotion, state)
        return replace(result, intent=decision, route=route, latency_ms=latency)

    def semantic_text(self, text: str) -> str:
        """What the message is about, as the classifier, the answer cache and retrieval read it: without the shop's
        order and tracking numbers, and without greetings in front ("你好，请问退货政策" → "退货政策")."""
        return self.openers.read_past(self.entities.identifiers.without_references(text))

    def _read(
        self, text: str, semantic: str, vector: npt.NDArray[np.float32], lap: Callable[[str], None]
    ) -> tuple[Prediction | None, Emotion]:
        """The classifier's prediction and the message's emotion: functions of the message alone (its vector is its
        semantic text's), kept for the last `MEMO_SIZE` messages. Customers send the same words again and again
        ("转人工", "在吗", an FAQ's question, the widget's suggested questions), and classifying one is a tenth of a
        turn's Python. (Entities depend on the day and the conversation: the extractor keeps them by text and day.)"""
        model = self.model
        thresholds = (model.thresholds.temperature, model.thresholds.oos, model.thresholds.accept) if model else None
        with self._read_lock:
            kept = self._read_lately.get(text)
            if kept is not None and kept[0] is model and kept[1] == thresholds:
                self._read_lately.move_to_end(text)
                lap("classify")
                lap("emotion")
                return kept[2], kept[3]
        prediction = model.predict(vector, semantic) if model is not None else None
        lap("classify")
        emotion = self.emotion.detect(text, vector)
        lap("emotion")
        with self._read_lock:
            self._read_lately[text] = (model, thresholds, prediction, emotion)
            if len(self._read_lately) > MEMO_SIZE:
                self._read_lately.popitem(last=False)
        return prediction, emotion

    def _analyse(
        self,
        text: str,
        history: Sequence[Message],
        now: datetime,
        state: DialogueState,
        default_language: Language,
        *,
        embedded: tuple[str, npt.NDArray[np.float32], float] | None = None,
    ) -> tuple[UnderstandingResult, npt.NDArray[np.float32] | None, Prediction | None]:
        """`embedded`: the message's semantic text, its vector and the ms that took, when the caller has them."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now_ = time.perf_counter()
            timings[name] = (now_ - clock) * 1000
            clock = now_

        # "[PHONE_1:5678]" (a redacted phone) says nothing about the customer's language.
        words = _PLACEHOLDER.sub(" ", text)
        language = detect_language(words, default_language)
        mix = language_mix(words)
        entities = self.entities.extract(text, now, history)
        lap("entities")
        hit = None
        if self.rules is not None:
            hit = RuleMatcher.decide(self.rules.match(text, {e.type for e in entities}))
        lap("rules")
        if embedded is None:
            semantic = self.semantic_text(text)
            vector = self.embedder.embed_queries([semantic])[0]
            lap("embed")
        else:
            semantic, vector, timings["embed"] = embedded
            clock = time.perf_counter()
        prediction, emotion = self._read(text, semantic, vector, lap)
        candidates = tuple(IntentScore(label, p) for label, p in prediction.ranked) if prediction else ()
        if hit is not None:
            decision = IntentDecision(
                hit.intent, 1.0, "rules", candidates, reason=f"{hit.kind} rule matched", rule=hit.matched
            )
        elif prediction is not None:
            reason = "out of scope" if prediction.label == OOS_LABEL else "classifier"
            reason = f"{reason} (top probability {prediction.top_probability:.2f})"
            alike: tuple[str, ...] = ()
            if prediction.uncertain and self.settle_alike and self.model is not None:
                alike = self.router.handled_alike(prediction.ranked, self.model.thresholds.accept)
            if alike:
                scores = ", ".join(f"{label} {p:.2f}" for label, p in prediction.ranked[: len(alike)])
                reason = f"classifier unsure between {scores}; all answered from knowledge, so no LLM needed"
            decision = IntentDecision(
                prediction.label,
                prediction.confidence,
                "classifier",
                candidates,
                reason=reason,
                needed_llm=prediction.uncertain and not alike,
                alike=alike,
            )
        else:
            decision = IntentDecision(None, 0.0, "none", reason="no intent catalogue")
        route = self.router.route(decision, entities, emotion, state)
        lap("route")
        result = UnderstandingResult(
            text=text,
            language=language,
            language_mix=mix,
            intent=decision,
            entities=tuple(entities),
            emotion=emotion,
            route=route,
            latency_ms=timings,
            semantic_text=semantic,
        )
        return result, vector, prediction


def build_understanding(
    settings: Settings, prompts: PromptLibrary, embedder: Embedder | None = None
) -> Understanding | None:
    """The configured `Understanding`, or None when it is switched off (blocking: run it off the event loop).

    `embedder`: the process's shared `settings.understanding.embedder` model; default: a new one.
    """
    options = settings.understanding
    if not options.enabled:
        return None
    if embedder is None:
        embedder = build_embedder(EmbeddingSettings(backend=options.embedder))
    config = UnderstandingConfig(
        shop_dir=settings.shop.dir,
        intents_file=options.intents_file,
        emotion_file=options.emotion_file or DEFAULT_EMOTION_FILE,
        openers_file=options.openers_file or DEFAULT_OPENERS_FILE,
        cache_dir=options.cache_dir or settings.data_dir / "understanding",
        training=TrainingOptions(c=options.classifier_c, text_features=options.text_features),
        oos_threshold=options.oos_threshold,
        accept_threshold=options.accept_threshold,
        rules_max_chars=options.rules_max_chars,
        llm_fallback=options.llm_fallback,
        llm_timeout_s=options.llm_timeout_s,
        settle_alike=not options.llm_fallback_when_alike,
        router=RouterWeights(**options.router.model_dump()),
    )
    return Understanding.build(config, embedder, prompts)
