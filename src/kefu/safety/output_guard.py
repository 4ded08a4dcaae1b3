"""The output guard: every reply is checked before the customer sees it and before it is stored."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kefu.safety.input_guard import normalise_for_matching
from kefu.safety.lexicon import Lexicon
from kefu.safety.normalise import fold
from kefu.safety.pii import PiiVault, Redactor, kinds_in
from kefu.safety.verdict import PASSED, GuardVerdict

_I = re.IGNORECASE
_SHINGLE = 12
LEAK_SHINGLES = 6
"""Shingles of the system prompt in a reply (sampled every 3 characters) that make it a leak."""
_PROMPT_MARKERS = re.compile(
    r"<\|?(im_start|im_end|system)\|?>|\bmy (system prompt|instructions are|hidden instructions)\b|"
    r"\bsystem prompt\s*[:：]|(我的|以下是我的|我收到的)(系统提示词?|指令|设定)(是|如下)|系统提示词?\s*[:：]",
    _I,
)
_MONEY = (
    r"(?:(?:¥|￥|RMB|CNY|\$|USD)\s*(?P<a1>\d+(?:[.,]\d+)?)"
    r"|(?P<a2>\d+(?:[.,]\d+)?)\s*(?:元|块|rmb|cny|yuan|dollars?|usd))"
)
_PROMISE_MONEY = (
    re.compile(
        r"(我们|我|会|将|可以|能|给您|为您|帮您|保证|承诺|同意|马上|立即)[^。！？!?\n]{0,16}"
        r"(赔偿|补偿|赔付|赔您|退还|退款|返还|返现|退给您|打款)[^。！？!?\n]{0,10}?" + _MONEY,
        _I,
    ),
    re.compile(
        r"\b(we('ll| will)|i('ll| will)|we can|i can|you('ll| will) (get|receive)|guarantee|promise)\b[^.!?\n]{0,40}"
        r"\b(refund|compensat\w*|reimburse\w*|pay you|credit you|give you|send you)\b[^.!?\n]{0,20}?" + _MONEY,
        _I,
    ),
)
_PROMISE_MULTIPLE = re.compile(
    r"(双倍|两倍|三倍|十倍|加倍|翻倍|全额加|额外赔|\bdouble\b|\btwice\b|\btriple\b|\bten times\b|\b\d+x\b)"
    r"[^。！？!?\n]{0,12}(退款|赔偿|补偿|refund|compensat)|"
    r"(退款|赔偿|补偿|refund|compensat\w*)[^。！？!?\n]{0,12}(双倍|两倍|三倍|十倍|加倍|翻倍|\bdouble\b|\btwice\b|\btriple\b)",
    _I,
)
_PROMISE_DATE = re.compile(
    r"(保证|确保|一定|肯定|承诺|百分百|绝对)[^。！？!?\n]{0,12}(今天|明天|后天|周[一二三四五六日天]|星期[一二三四五六日天]|\d+\s*(月|号|日|小时|天)内?)"
    r"[^。！？!?\n]{0,8}(送到|到货|送达|发货|到账|退款|处理)|"
    r"\b(guarantee[ds]?|promise[ds]?|definitely|for sure|certainly)\b[^.!?\n]{0,30}\b(arrive|deliver\w*|ship\w*|"
    r"refund\w*|reach you)\b[^.!?\n]{0,20}\b(today|tomorrow|by (mon|tues|wednes|thurs|fri|satur|sun)day|"
    r"within \d+ (hours?|days?)|on \w+ \d+)",
    _I,
)


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """The verdict on a reply, and the reply as the customer may see it when it passed."""

    verdict: GuardVerdict
    reply: str


class SystemPromptLeakDetector:
    """Flags replies that quote long stretches of the system prompt (character shingles)."""

    def __init__(self) -> None:
        self._shingles: dict[str, frozenset[str]] = {}

    def _of(self, system_prompt: str) -> frozenset[str]:
        found = self._shingles.get(system_prompt)
        if found is None:
            flat = re.sub(r"\s+", "", system_prompt)
            found = frozenset(flat[i : i + _SHINGLE] for i in range(max(0, len(flat) - _SHINGLE + 1)))
            if len(self._shingles) > 64:
                self._shingles.clear()
            self._shingles[system_prompt] = found
        return found

    def leaked(self, reply: str, system_prompt: str | None) -> str | None:
        if _PROMPT_MARKERS.search(reply):
            return "prompt marker"
        hits = self.quoted(reply, system_prompt)
        # A sentence of policy quoted back is fine; a third of the prompt's instructions is not.
        return f"{hits} prompt shingles" if hits >= LEAK_SHINGLES else None

    def quoted(self, reply: str, system_prompt: str | None) -> int:
        """How many of the reply's sampled 12-character shingles are in the system prompt (0 without one)."""
        if not system_prompt:
            return 0
        shingles = self._of(system_prompt)
        flat = re.sub(r"\s+", "", reply)
        return sum(1 for i in range(0, max(0, len(flat) - _SHINGLE + 1), 3) if flat[i : i + _SHINGLE] in shingles)


class OutputGuard:
    """Checks one reply: sensitive words, system-prompt leaks, others' personal data, promises, grounding."""

    def __init__(self, lexicon: Lexicon, redactor: Redactor, public_values: frozenset[str] = frozenset()) -> None:
        self.lexicon = lexicon
        self.redactor = redactor
        self.public_values = public_values
        """The shop's own contacts (found in its knowledge files): not personal data, fine to repeat."""
        self.leaks = SystemPromptLeakDetector()

    def check(
        self,
        reply: str,
        *,
        vault: PiiVault | None,
        system_prompt: str | None = None,
        trace: Mapping[str, Any] | None = None,
        generated: bool = True,
    ) -> OutputCheck:
        """`generated`: the reply came from a model (promise checks apply); curated answers are the shop's own words."""
        trace = trace or {}
        clean = normalise_for_matching(reply)
        # Listed words are also looked for in the folded reply (look-alike letters, traditional characters).
        if self.lexicon.find(clean) or self.lexicon.find(fold(clean)):
            return OutputCheck(GuardVerdict(True, "sensitive_word", ("listed word in reply",), 1.0, "guard_output"), "")
        leak = self.leaks.leaked(clean, system_prompt) if generated else None
        if leak:
            return OutputCheck(GuardVerdict(True, "prompt_leak", (leak,), 1.0, "guard_output", handoff=False), "")
        shown = reply
        if vault is not None:
            shown = self.redactor.unmask_for_customer(reply, vault)
        foreign = self.redactor.foreign(shown, vault, self.public_values)
        if foreign:
            reason = "personal data not the customer's: " + ",".join(kinds_in(foreign))
            return OutputCheck(GuardVerdict(True, "pii_leak", (reason,), 1.0, "guard_output", handoff=True), "")
        if vault is not None:
            # The customer's own full values are shown masked: a reply need never repeat them in full.
            for m in reversed(self.redactor.foreign(shown, None, self.public_values)):
                token = vault.placeholder(m.kind, m.value, self.redactor.cipher)
                shown = shown[: m.start] + vault.masked(token, self.redactor.cipher) + shown[m.end :]
        if generated:
            promise = _promise_outside_policy(clean, trace)
            if promise:
                return OutputCheck(
                    GuardVerdict(True, "policy_promise", (promise,), 1.0, "guard_policy", handoff=True), ""
                )
        grounding = trace.get("grounding")
        if isinstance(grounding, Mapping) and grounding.get("supported") is False:
            return OutputCheck(
                GuardVerdict(True, "ungrounded", ("grounding check: unsupported claim",), 1.0, "guard_output", True), ""
            )
        return OutputCheck(PASSED, shown)


def _promise_outside_policy(reply: str, trace: Mapping[str, Any]) -> str | None:
    """Money or dates the bot may not promise. The order context (trace['order']) sets the allowed amount."""
    order = trace.get("order")
    allowed = 0.0
    if isinstance(order, Mapping):
        for key in ("refundable", "total"):
            value = order.get(key)
            if isinstance(value, int | float):
                allowed = float(value)
                break
    multiple, amounts, date = _promises(reply)
    if multiple:
        return "multiple of the price promised"
    for amount in amounts:
        if amount > allowed:
            return f"amount above what the order allows ({amount:g} > {allowed:g})"
    if date:
        return "date the shop cannot guarantee"
    return None


@functools.lru_cache(maxsize=2048)
def _promises(reply: str) -> tuple[bool, tuple[float, ...], bool]:
    """What a reply promises whatever the order, kept for recent replies (the same answers come turn after turn): a
    multiple of the price, the amounts of money in it (in the order they are checked), a date."""
    amounts = tuple(
        float((m.group("a1") or m.group("a2")).replace(",", ""))
        for pattern in _PROMISE_MONEY
        for m in pattern.finditer(reply)
    )
    return bool(_PROMISE_MULTIPLE.search(reply)), amounts, bool(_PROMISE_DATE.search(reply))
