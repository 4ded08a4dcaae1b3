"""The load test's customers: a realistic mix of conversations drawn from the demo shop's own data.

Four kinds, in the shares a plan gives them:
- `curated`: a question of the shop's FAQ (`knowledge/faq.csv`) or one of its listed paraphrases;
- `knowledge`: a question about the shop's policies from `eval/retrieval_queries.jsonl`;
- `flow`: a multi-turn task on a demo order, identity verified by the phone number (or its last 4 digits);
- `handoff`: a customer asking for a person, or an angry complaint.
Flows only read the demo backend (status, parcel, refund, a return given up before it is filed), so every
conversation finds the backend as it was seeded, however many ran before it.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

KINDS = ("curated", "knowledge", "flow", "handoff")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Conversation:
    """What one customer says, turn by turn, and what the last reply must show for the conversation to be right."""

    kind: str
    language: str
    turns: tuple[str, ...]
    expect_text: str | None = None
    """A text the last reply must contain (an order number once identity is verified, a cancellation notice)."""
    expect_handoff: bool = False


FLOWS = (
    Conversation("flow", "zh", ("帮我查一下订单 LM26110625 的状态", "0827"), expect_text="LM26110625"),
    Conversation("flow", "zh", ("帮我查一下运单 78184729385880 到哪了", "0827"), expect_text="78184729385880"),
    Conversation("flow", "zh", ("我的订单 LM26110714 到哪了", "13851335197"), expect_text="LM26110714"),
    Conversation("flow", "zh", ("退款进度 LM26110133", "6394"), expect_text="LM26110133"),
    Conversation("flow", "zh", ("我要退货 LM26110625", "0827", "算了"), expect_text="没有做任何更改"),
    Conversation("flow", "en", ("Where is my order LM26110696?", "4301"), expect_text="LM26110696"),
    Conversation("flow", "en", ("Can you track parcel JDV080094180868 for me?", "6436"), expect_text="JDV080094180868"),
    Conversation("flow", "en", ("I haven't received my refund for LM26100033", "6443"), expect_text="LM26100033"),
    Conversation(
        "flow", "en", ("I want to return order LM26110737", "6436", "never mind"), expect_text="nothing was changed"
    ),
)
"""Taken from the shop's scenario tests (examples/demo_shop/scenarios.yaml), which check the same replies."""

HANDOFFS = (
    Conversation("handoff", "zh", ("转人工",), expect_handoff=True),
    Conversation("handoff", "zh", ("我要找人工客服",), expect_handoff=True),
    Conversation("handoff", "zh", ("你们这什么破服务，太垃圾了，我要投诉！",), expect_handoff=True),
    Conversation("handoff", "en", ("I want to talk to a human agent",), expect_handoff=True),
    Conversation("handoff", "en", ("Can I speak to a real person please?",), expect_handoff=True),
    Conversation(
        "handoff",
        "en",
        ("This is the worst service ever. I'm furious and I want to file a complaint!",),
        expect_handoff=True,
    ),
)

GREETINGS = {"zh": ("你好，", "请问", "麻烦问下，", "您好！"), "en": ("Hi, ", "Hello! ", "Quick question: ", "Hey, ")}
"""Put before some questions, as customers do: the same question arrives in several spellings."""


def _faq_questions(shop_dir: Path) -> dict[str, list[tuple[str, ...]]]:
    """Language → one tuple per FAQ entry: its question, then its listed paraphrases."""
    found: dict[str, list[tuple[str, ...]]] = {}
    with (shop_dir / "knowledge" / "faq.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            phrasings = (row["question"], *(q.strip() for q in (row.get("similar_questions") or "").split("|")))
            found.setdefault(row["lang"], []).append(tuple(p for p in phrasings if p))
    return found


def _knowledge_questions(shop_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with (shop_dir / "eval" / "retrieval_queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                found.setdefault(item["lang"], []).append(item["query"])
    return found


class ConversationMix:
    """Draws conversations at random in the plan's shares; the same seed gives the same sequence."""

    def __init__(
        self,
        shop_dir: Path,
        shares: Mapping[str, float],
        *,
        zh_share: float = 0.5,
        greeting_share: float = 0.5,
        seed: int = 0,
    ) -> None:
        unknown = set(shares) - set(KINDS)
        if unknown or not any(shares.values()):
            raise ValueError(f"mix shares must be among {', '.join(KINDS)} and not all zero, got {dict(shares)}")
        self.kinds = [k for k in KINDS if shares.get(k, 0) > 0]
        self.weights = [shares[k] for k in self.kinds]
        self.zh_share = zh_share
        self.greeting_share = greeting_share
        self._rng = random.Random(seed)
        self._faq = _faq_questions(shop_dir)
        self._knowledge = _knowledge_questions(shop_dir)
        self._scripted = {"flow": FLOWS, "handoff": HANDOFFS}

    def mean_turns(self) -> float:
        """Turns per conversation, on average over the mix (flows have several)."""
        total = sum(self.weights)
        per_kind = {
            k: sum(len(c.turns) for c in self._scripted[k]) / len(self._scripted[k]) if k in self._scripted else 1.0
            for k in self.kinds
        }
        return sum(w * per_kind[k] for k, w in zip(self.kinds, self.weights, strict=True)) / total

    def next(self) -> Conversation:
        rng = self._rng
        kind = rng.choices(self.kinds, self.weights)[0]
        language = "zh" if rng.random() < self.zh_share else "en"
        if kind in self._scripted:
            scripted = [c for c in self._scripted[kind] if c.language == language] or list(self._scripted[kind])
            return rng.choice(scripted)
        if kind == "curated":
            question = rng.choice(rng.choice(self._pool(self._faq, language)))
        else:
            question = rng.choice(self._pool(self._knowledge, language))
        if rng.random() < self.greeting_share:
            question = rng.choice(GREETINGS[language]) + question
        return Conversation(kind, language, (question,))

    @staticmethod
    def _pool(pools: Mapping[str, Sequence[T]], language: str) -> Sequence[T]:
        # The shop may have questions in one language only.
        return pools.get(language) or next(p for p in pools.values() if p)
