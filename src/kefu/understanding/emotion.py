"""Emotion and urgency: a zh/en cue lexicon plus a small model over the turn's sentence embedding.

The lexicon catches explicit words ("骗子", "wtf", "急") instantly and explains itself; the model
catches what has no cue word ("一个月了还不退款"). Both are trained or loaded from one data file.
"""

from __future__ import annotations

import re
from pathlib import Path

import ahocorasick
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from kefu.datafiles import load_yaml_model
from kefu.embeddings.cache import CachedEmbedder
from kefu.understanding.calibration import softmax
from kefu.understanding.catalogue import PerLanguage
from kefu.understanding.types import Emotion, EmotionLabel

DEFAULT_EMOTION_FILE = Path(__file__).parent / "data" / "emotion.yaml"
_LABELS: tuple[EmotionLabel, ...] = ("neutral", "positive", "negative", "angry")
_SHOUTING = re.compile(r"[!！]{2,}|[?？]{3,}|\b[A-Z]{4,}\b")


class _Lexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    angry: PerLanguage = Field(default_factory=PerLanguage)
    negative: PerLanguage = Field(default_factory=PerLanguage)
    positive: PerLanguage = Field(default_factory=PerLanguage)
    urgent: PerLanguage = Field(default_factory=PerLanguage)


class _Examples(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    neutral: PerLanguage
    positive: PerLanguage
    negative: PerLanguage
    angry: PerLanguage
    urgent: PerLanguage


class EmotionData(BaseModel):
    """The emotion data file: cue words and labelled examples, both languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lexicon: _Lexicon
    examples: _Examples


class EmotionDetector:
    """Labels a message neutral / positive / negative / angry and flags urgency."""

    def __init__(self, data: EmotionData, embedder: CachedEmbedder | None) -> None:
        self._automaton = ahocorasick.Automaton()
        for kind in ("angry", "negative", "positive", "urgent"):
            for cue in getattr(data.lexicon, kind).all():
                key = cue.lower()
                if key in self._automaton:
                    continue
                self._automaton.add_word(key, (kind, key))
        self._automaton.make_automaton()
        self._emotion_model: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        self._urgency_model: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        if embedder is not None:
            self._train(data, embedder)

    @classmethod
    def load(cls, path: Path, embedder: CachedEmbedder | None) -> EmotionDetector:
        return cls(load_yaml_model(path, EmotionData), embedder)

    def _train(self, data: EmotionData, embedder: CachedEmbedder) -> None:
        texts: list[str] = []
        y: list[int] = []
        for i, label in enumerate(_LABELS):
            examples = getattr(data.examples, label).all()
            texts += examples
            y += [i] * len(examples)
        urgent = data.examples.urgent.all()
        vectors = embedder.embed_queries([*texts, *urgent])
        embedder.save()
        with threadpool_limits(limits=1):
            emotion = LogisticRegression(C=10.0, max_iter=2000).fit(vectors[: len(texts)], np.array(y))
            urgency = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced").fit(
                vectors, np.array([0] * len(texts) + [1] * len(urgent))
            )
        self._emotion_model = (np.asarray(emotion.coef_, dtype=np.float64), np.asarray(emotion.intercept_))
        self._urgency_model = (np.asarray(urgency.coef_, dtype=np.float64), np.asarray(urgency.intercept_))

    def cues(self, text: str) -> dict[str, list[str]]:
        """Lexicon words found in the text, by kind; English cues must be whole words."""
        found: dict[str, list[str]] = {}
        lowered = text.lower()
        for end, (kind, cue) in self._automaton.iter(lowered):
            start = end - len(cue) + 1
            if cue.isascii():
                before = lowered[start - 1] if start > 0 else " "
                after = lowered[end + 1] if end + 1 < len(lowered) else " "
                if after == "s" and not lowered[end + 2 : end + 3].isalnum():
                    after = " "  # "scammers", "frauds"
                if (before.isalnum() and before.isascii()) or (after.isalnum() and after.isascii()):
                    continue
            found.setdefault(kind, []).append(cue)
        return found

    def detect(self, text: str, vector: npt.NDArray[np.float32] | None) -> Emotion:
        cues = self.cues(text)
        probs = dict.fromkeys(_LABELS, 0.0)
        probs["neutral"] = 1.0
        urgent_p = 0.0
        if vector is not None and self._emotion_model is not None and self._urgency_model is not None:
            coef, intercept = self._emotion_model
            p = softmax(coef @ vector + intercept)
            probs = {label: float(p[i]) for i, label in enumerate(_LABELS)}
            ucoef, uintercept = self._urgency_model
            urgent_p = float(1 / (1 + np.exp(-(ucoef @ vector + uintercept)[0])))
        shouting = 0.15 if _SHOUTING.search(text) else 0.0
        # The model alone must be fairly sure: a false "unhappy" pushes a calm customer towards a human.
        angry = max(probs["angry"] - 0.1, 0.8 if "angry" in cues else 0.0) + shouting
        negative = max(probs["negative"] + probs["angry"] - 0.15, 0.65 if "negative" in cues else 0.0)
        positive = max(probs["positive"], 0.6 if "positive" in cues else 0.0)
        urgent = "urgent" in cues or urgent_p >= 0.7
        flat = tuple(c for kind in ("angry", "negative", "urgent", "positive") for c in cues.get(kind, []))
        if angry >= 0.5:
            return Emotion("angry", min(angry, 1.0), urgent, flat)
        if negative >= 0.5:
            return Emotion("negative", min(negative, 1.0), urgent, flat)
        if positive >= 0.5:
            return Emotion("positive", positive, urgent, flat)
        return Emotion("neutral", 0.0, urgent, flat)
