"""Calibrating the classifier on held-out predictions: a temperature, the out-of-scope and LLM-fallback thresholds.

Thresholds are chosen on predictions for examples the model did not train on (cross-validation folds,
or a validation split for large sets), never on the training fit itself, whose confidence is inflated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How confident the classifier must be to decide alone."""

    temperature: float = 1.0
    """Logits are divided by this before the softmax, so probabilities match observed accuracy."""
    oos: float = 0.3
    """Below this top in-scope probability a turn is out of scope."""
    accept: float = 0.6
    """Below this top probability the classifier is unsure and the LLM fallback is asked (when enabled)."""
    validation: dict[str, float] | None = None
    """What the chosen thresholds achieved on the validation predictions."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def fit_temperature(logits: FloatArray, y: IntArray) -> float:
    """The temperature minimising the negative log-likelihood of held-out logits (a 1-D grid search)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.05), np.log(10.0), 80)):
        p = softmax(logits, float(t))
        nll = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def decide(probs: FloatArray, oos_index: int | None, oos_threshold: float) -> tuple[IntArray, FloatArray]:
    """Predicted class per row (the oos class when out of scope) and its in-scope top probability."""
    in_scope = probs.copy()
    if oos_index is not None:
        in_scope[:, oos_index] = -1.0
    top = in_scope.argmax(axis=1)
    conf = in_scope[np.arange(len(probs)), top]
    pred = top.copy()
    if oos_index is not None:
        rejected = (probs[:, oos_index] > conf) | (conf < oos_threshold)
        pred[rejected] = oos_index
    return pred, conf


def calibrate(
    logits: FloatArray,
    y: IntArray,
    oos_index: int | None,
    *,
    max_in_scope_loss: float = 0.02,
    accept_precision: float = 0.97,
) -> Thresholds:
    """Temperature, then the out-of-scope threshold that best balances in-scope accuracy and OOS recall.

    The OOS threshold may cost at most `max_in_scope_loss` of in-scope accuracy: customers with a real
    question matter more than a polite refusal of an unrelated one. The accept threshold is the lowest
    top probability above which held-out decisions were right `accept_precision` of the time.
    """
    temperature = fit_temperature(logits, y)
    probs = softmax(logits, temperature)
    is_oos = (y == oos_index) if oos_index is not None else np.zeros(len(y), dtype=bool)
    grid = np.round(np.linspace(0.0, 0.9, 91), 3)

    def scores(threshold: float) -> tuple[float, float]:
        pred, _ = decide(probs, oos_index, threshold)
        in_acc = float(np.mean(pred[~is_oos] == y[~is_oos])) if (~is_oos).any() else 1.0
        oos_recall = float(np.mean(pred[is_oos] == oos_index)) if is_oos.any() else 1.0
        return in_acc, oos_recall

    table = {float(t): scores(float(t)) for t in grid}
    best_in_scope = max(acc for acc, _ in table.values())
    if is_oos.any():
        allowed = [t for t, (acc, _) in table.items() if acc >= best_in_scope - max_in_scope_loss]
        oos_threshold = max(allowed, key=lambda t: (table[t][0] + table[t][1], -t))
    else:
        # Without out-of-scope examples, reject only what is less confident than nearly every in-scope example.
        _, conf = decide(probs, None, 0.0)
        oos_threshold = float(np.quantile(conf, 0.02))
    pred, _ = decide(probs, oos_index, oos_threshold)
    correct = pred == y
    top = probs.max(axis=1)
    accept = 1.0
    for t in np.round(np.linspace(0.99, 0.0, 100), 3):
        chosen = top >= t
        if chosen.sum() >= max(5, 0.1 * len(y)) and float(np.mean(correct[chosen])) < accept_precision:
            break
        accept = float(t)
    in_acc, oos_recall = table.get(float(oos_threshold), scores(oos_threshold))
    validation = {
        "examples": float(len(y)),
        "in_scope_accuracy": round(in_acc, 4),
        "oos_recall": round(oos_recall, 4),
        "accuracy_above_accept": round(float(np.mean(correct[top >= accept])), 4) if (top >= accept).any() else 0.0,
        "share_below_accept": round(float(np.mean(top < accept)), 4),
    }
    return Thresholds(temperature=round(temperature, 4), oos=oos_threshold, accept=accept, validation=validation)
