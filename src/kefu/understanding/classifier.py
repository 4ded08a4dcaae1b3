"""Stage 2: a linear intent classifier over sentence embeddings plus character n-grams, trained at start-up.

Embeddings carry meaning across wordings and languages; character n-grams (TF-IDF) carry the exact
shop words and survive typos the embedding model has never seen. One multinomial logistic regression
over both, calibrated on held-out folds (see `calibration`), gives each intent a probability.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from kefu.embeddings.cache import CachedEmbedder
from kefu.understanding.calibration import Thresholds, calibrate, softmax
from kefu.understanding.types import OOS_LABEL

log = logging.getLogger(__name__)

MODEL_VERSION = 4
"""Bump when training changes, so cached models from older code are not reused."""
_CV_LIMIT = 5000
"""Up to this many examples thresholds are calibrated by 5-fold cross-validation, above it on one split."""


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """Knobs of the classifier; the defaults were chosen on the demo shop's validation folds."""

    c: float = 20.0
    """Inverse regularisation strength of the logistic regression."""
    text_features: bool = True
    """Add character 1-3-gram TF-IDF features to the embedding."""
    text_weight: float = 0.5
    embedding_weight: float = 1.0
    folds: int = 5
    validation_share: float = 0.15
    max_in_scope_loss: float = 0.02
    accept_precision: float = 0.97
    seed: int = 13


@dataclass(slots=True)
class Prediction:
    """The classifier's view of one message."""

    label: str
    """The best intent, or `oos`."""
    confidence: float
    """Probability of the best in-scope intent (for `oos`: the probability that it is out of scope)."""
    ranked: list[tuple[str, float]]
    top_probability: float
    """The largest probability over all classes, out of scope included; below `accept` means unsure."""
    uncertain: bool


@functools.lru_cache(maxsize=8)
def _ngram_tools(
    vectorizer: TfidfVectorizer,
) -> tuple[Callable[[str], list[str]], dict[str, int], npt.NDArray[np.float64]]:
    """A fitted vectorizer's analyzer, vocabulary and idf, looked up once per model (sklearn builds the analyzer anew
    on each call, and `idf_` is a property)."""
    return vectorizer.build_analyzer(), vectorizer.vocabulary_, np.asarray(vectorizer.idf_, dtype=np.float64)


@dataclass(slots=True)
class IntentModel:
    """A trained classifier: weights, the n-gram vocabulary, thresholds and the embedded examples."""

    classes: list[str]
    oos_index: int | None
    coef_embedding: npt.NDArray[np.float32]
    coef_text: npt.NDArray[np.float32] | None
    """(classes, n-grams), dense: one message touches a few dozen columns, read directly."""
    intercept: npt.NDArray[np.float32]
    vectorizer: TfidfVectorizer | None
    thresholds: Thresholds
    example_vectors: npt.NDArray[np.float32]
    example_labels: list[str]
    example_texts: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, vector: npt.NDArray[np.float32], text: str) -> npt.NDArray[np.float64]:
        out = np.asarray(self.coef_embedding @ vector + self.intercept, dtype=np.float64)
        if self.vectorizer is not None and self.coef_text is not None:
            out += self._ngram_logits(text)
        return out

    def _ngram_logits(self, text: str) -> npt.NDArray[np.float64]:
        """TF-IDF of one message times the n-gram weights, as sklearn computes it, without its per-call overhead."""
        assert self.vectorizer is not None and self.coef_text is not None
        analyzer, vocabulary, idf = _ngram_tools(self.vectorizer)
        counts = Counter(column for column in map(vocabulary.get, analyzer(text)) if column is not None)
        if not counts:
            return np.zeros(len(self.classes))
        columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        weights = tf * idf[columns]
        weights /= math.sqrt(float(weights @ weights))
        return np.asarray(self.coef_text[:, columns] @ weights, dtype=np.float64)

    def predict(self, vector: npt.NDArray[np.float32], text: str, *, top: int = 5) -> Prediction:
        probs = softmax(self.logits(vector, text), self.thresholds.temperature)
        order = np.argsort(-probs)
        ranked = [(self.classes[i], float(probs[i])) for i in order[:top]]
        in_scope = [(label, p) for label, p in ranked if label != OOS_LABEL]
        best_label, best_p = in_scope[0] if in_scope else (OOS_LABEL, 0.0)
        p_oos = float(probs[self.oos_index]) if self.oos_index is not None else 0.0
        top_p = float(probs[order[0]])
        if p_oos > best_p or best_p < self.thresholds.oos:
            return Prediction(OOS_LABEL, max(p_oos, 1.0 - best_p), ranked, top_p, top_p < self.thresholds.accept)
        return Prediction(best_label, best_p, ranked, top_p, top_p < self.thresholds.accept)

    def nearest_examples(
        self, vector: npt.NDArray[np.float32], labels: Sequence[str], per_label: int = 2
    ) -> list[tuple[str, str]]:
        """The training examples most similar to `vector` for each label, for the LLM fallback's prompt."""
        sims = self.example_vectors @ vector
        chosen: list[tuple[str, str]] = []
        wanted = set(labels)
        counts: Counter[str] = Counter()
        for i in np.argsort(-sims):
            label = self.example_labels[i]
            if label in wanted and counts[label] < per_label:
                chosen.append((label, self.example_texts[i]))
                counts[label] += 1
                if len(chosen) >= per_label * len(wanted):
                    break
        return chosen


def _features(
    vectors: npt.NDArray[np.float32], texts: Sequence[str], vectorizer: TfidfVectorizer | None, options: TrainingOptions
) -> sp.csr_matrix:
    dense = sp.csr_matrix(vectors * options.embedding_weight)
    if vectorizer is None:
        return dense
    return sp.hstack([dense, vectorizer.transform(texts) * options.text_weight], format="csr")


def _vectorizer(options: TrainingOptions) -> TfidfVectorizer | None:
    if not options.text_features:
        return None
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=1, lowercase=True, max_features=60_000
    )


def _fit(
    vectors: npt.NDArray[np.float32], texts: Sequence[str], y: npt.NDArray[np.int64], options: TrainingOptions
) -> tuple[LogisticRegression, TfidfVectorizer | None]:
    vectorizer = _vectorizer(options)
    if vectorizer is not None:
        vectorizer.fit(texts)
    model = LogisticRegression(C=options.c, max_iter=3000, tol=1e-4, random_state=options.seed)
    model.fit(_features(vectors, texts, vectorizer, options), y)
    return model, vectorizer


def _full_logits(
    model: LogisticRegression,
    vectorizer: TfidfVectorizer | None,
    vectors: npt.NDArray[np.float32],
    texts: Sequence[str],
    options: TrainingOptions,
    n_classes: int,
) -> npt.NDArray[np.float64]:
    """Decision values for every class, also those absent from this fold's training part."""
    raw = np.asarray(model.decision_function(_features(vectors, texts, vectorizer, options)), dtype=np.float64)
    if raw.ndim == 1:  # two classes: sklearn returns one column
        raw = np.stack([-raw / 2, raw / 2], axis=1)
    out = np.full((len(texts), n_classes), -1e3)
    out[:, model.classes_] = raw
    return out


def held_out_logits(
    vectors: npt.NDArray[np.float32], texts: Sequence[str], y: npt.NDArray[np.int64], options: TrainingOptions
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Logits for examples the model did not see: k-fold for small sets, one validation split for large ones."""
    n_classes = int(y.max()) + 1
    counts = np.bincount(y)
    if len(y) <= _CV_LIMIT and counts.min() >= 2:
        folds = StratifiedKFold(n_splits=int(min(options.folds, counts.min())), shuffle=True, random_state=options.seed)
        logits = np.zeros((len(y), n_classes))
        for train_idx, test_idx in folds.split(vectors, y):
            model, vectorizer = _fit(vectors[train_idx], [texts[i] for i in train_idx], y[train_idx], options)
            logits[test_idx] = _full_logits(
                model, vectorizer, vectors[test_idx], [texts[i] for i in test_idx], options, n_classes
            )
        return logits, y
    stratify = y if counts.min() >= 2 else None
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=options.validation_share, random_state=options.seed, stratify=stratify
    )
    model, vectorizer = _fit(vectors[train_idx], [texts[i] for i in train_idx], y[train_idx], options)
    logits = _full_logits(model, vectorizer, vectors[test_idx], [texts[i] for i in test_idx], options, n_classes)
    return logits, y[test_idx]


def train_intent_model(
    texts: Sequence[str],
    labels: Sequence[str],
    embedder: CachedEmbedder,
    options: TrainingOptions | None = None,
) -> IntentModel:
    """Embed the examples, calibrate thresholds on held-out predictions, then fit on everything."""
    options = options or TrainingOptions()
    classes = sorted(set(labels), key=lambda c: (c == OOS_LABEL, c))
    if len([c for c in classes if c != OOS_LABEL]) < 2:
        raise ValueError("an intent classifier needs at least two intents with examples")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    vectors = embedder.embed_queries(texts)
    embedder.save()
    oos_index = index.get(OOS_LABEL)
    # Multi-threaded BLAS on these small matrices spends its time contending for the cores (measured 10-50x
    # slower on a busy 2-core machine); one thread trains a catalogue in about a second.
    with threadpool_limits(limits=1):
        logits, y_held = held_out_logits(vectors, texts, y, options)
        thresholds = calibrate(
            logits,
            y_held,
            oos_index,
            max_in_scope_loss=options.max_in_scope_loss,
            accept_precision=options.accept_precision,
        )
        model, vectorizer = _fit(vectors, texts, y, options)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: expand to one row per class like the multinomial case
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    dim = vectors.shape[1]
    coef_text = (coef[:, dim:] * options.text_weight).astype(np.float32) if vectorizer is not None else None
    return IntentModel(
        classes=classes,
        oos_index=oos_index,
        coef_embedding=(coef[:, :dim] * options.embedding_weight).astype(np.float32),
        coef_text=coef_text,
        intercept=intercept.astype(np.float32),
        vectorizer=vectorizer,
        thresholds=thresholds,
        example_vectors=vectors,
        example_labels=list(labels),
        example_texts=list(texts),
        info={"examples": len(texts), "classes": len(classes), "embedder": embedder.name},
    )


def model_cache_key(fingerprint: str, embedder_name: str, options: TrainingOptions) -> str:
    """Everything that changes the trained model: the data, the embedder, the options and the code."""
    raw = f"{fingerprint}|{embedder_name}|{options!r}|{MODEL_VERSION}|{sklearn.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def load_cached_model(directory: Path | None, key: str) -> IntentModel | None:
    """A model trained earlier with the same key; None when there is none or it cannot be read."""
    if directory is None:
        return None
    path = directory / f"intent-model-{key}.pkl"
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            # The cache lives in kefu's own data dir and is written only by kefu itself.
            model = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        log.warning("retraining: cached intent model %s is unreadable (%s)", path, exc)
        return None
    return model if isinstance(model, IntentModel) else None


def save_model(directory: Path | None, key: str, model: IntentModel) -> None:
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"intent-model-{key}.pkl"
    # Several workers may train at once on a cold data dir: each writes its own file, the last rename wins.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    for old in directory.glob("intent-model-*.pkl"):
        if old != path and old.stat().st_mtime < path.stat().st_mtime - 7 * 86400:
            old.unlink(missing_ok=True)
