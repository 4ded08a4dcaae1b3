"""Between a turn and its streaming channel: the model's text is shown in checked pieces, and replaced if it changes.

A piece ends at a clause or sentence end, before a space, or between two Chinese characters, at least `MIN_PIECE`
characters after the previous one (a clause end releases at once); in a stretch with digits only at a clause or
sentence end, so a phone or card number is never shown in part. It is released once the text up to its end passed
the output guard's checks that work on the beginning of a reply: sensitive words, personal data that is not the
customer's, prompt markers, promises outside policy. The start of what may become a listed word, and text quoting
the system prompt, are held back. So a reply the output guard replaces has usually shown nothing unsafe.

When the turn's final reply (after the grounding check, the output guard or an error fallback) does not begin with
what was shown, the channel is told to `replace` the streamed text by the final reply; otherwise it gets the rest.
"""

from __future__ import annotations

from typing import Any

from kefu.pipeline.context import TurnContext, TurnEvents
from kefu.pipeline.deps import TurnDeps
from kefu.safety.input_guard import normalise_for_matching
from kefu.safety.output_guard import LEAK_SHINGLES, OutputCheck, OutputGuard
from kefu.safety.pii import PLACEHOLDER, PiiVault

_CLAUSE_ENDS = frozenset("。！？；，、：…）」』”")
_SENTENCE_ENDS = frozenset(".!?;")
"""ASCII sentence ends: a boundary when a space follows (so "3.5" and "e.g.x" are not)."""
MIN_PIECE = 12
"""Characters since the last release before a space or a Chinese character releases more (a clause end always does)."""
QUOTE_HOLD = max(1, LEAK_SHINGLES // 2)
"""Text quoting this many sampled shingles of the system prompt (about 18 characters) is held back to the end."""


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def rest_after(shown: str, full: str) -> str | None:
    """The part of `full` after the words of `shown` (whitespace aside); None when `full` does not begin with them."""
    i = 0
    for ch in shown:
        if ch.isspace():
            continue
        while i < len(full) and full[i].isspace():
            i += 1
        if i >= len(full) or full[i] != ch:
            return None
        i += 1
    return full[i:]


class CheckedStream:
    """The runner's wrapper around a streaming channel's events; `settle` runs before the reply is stored."""

    streaming = True

    def __init__(self, inner: TurnEvents, ctx: TurnContext, deps: TurnDeps) -> None:
        self.inner = inner
        self._ctx = ctx
        self._deps = deps
        self.text = ""
        """Everything the turn streamed."""
        self.shown = ""
        """What the channel was sent, as the output guard shows it (placeholders and the customer's own data masked)."""
        self.held: str | None = None
        """Why nothing more is shown until the reply settles: the kind of check that tripped."""
        self._released = 0
        self._scanned = 0
        self._digits = False
        self._ends: list[tuple[int, bool]] = []
        """Boundaries after the released text: (position, whether a clause or sentence ends there)."""
        self._vault: PiiVault | None = None
        self._vault_loaded = False

    @classmethod
    def around(cls, ctx: TurnContext, deps: TurnDeps) -> CheckedStream | None:
        """Install the wrapper on a streaming turn (None for a channel that only wants the finished reply)."""
        if not ctx.events.streaming:
            return None
        stream = cls(ctx.events, ctx, deps)
        ctx.events = stream
        return stream

    async def started(self, ctx: TurnContext) -> None:
        await self.inner.started(ctx)

    async def delta(self, text: str) -> None:
        self.text += text
        if self.held is not None:
            return
        self._scan()
        end = self._next_release()
        if end is not None:
            await self._release(end)

    async def replace(self, text: str) -> None:
        await self.settle(text)

    async def settle(self, final: str) -> None:
        """The reply is final (checked, about to be stored): send the rest of it, or replace what was shown."""
        if not self.text:
            return  # nothing was streamed (a curated answer, a flow step): the channel's last event carries the reply
        rest = rest_after(self.shown, final)
        if rest is None:
            self._note(replaced=True)
            await self.inner.replace(final)
        elif rest:
            await self.inner.delta(rest)
        self.text = self.shown = final
        self.held = self.held or "settled"

    def _scan(self) -> None:
        """Find the boundaries in the text streamed since the last call (each character is looked at once)."""
        text = self.text
        for i in range(self._scanned, len(text)):
            ch = text[i]
            if ch.isdigit():
                self._digits = True
            elif ch in _CLAUSE_ENDS:
                self._ends.append((i + 1, True))
                self._digits = False
            elif ch.isspace() and i:
                before = text[i - 1]
                if ch == "\n" or before in _SENTENCE_ENDS:
                    if not before.isspace():
                        self._ends.append((i, True))
                    self._digits = False
                elif not before.isspace() and not self._digits:
                    self._ends.append((i, False))
            elif i and _is_cjk(ch) and _is_cjk(text[i - 1]) and not self._digits:
                self._ends.append((i, False))  # Chinese has no spaces: a long clause may be shown in parts
        self._scanned = len(text)

    def _next_release(self) -> int | None:
        limit = len(self.text)
        guard = self._guard()
        if guard is not None:
            # Hold back from where a listed word may be starting: none of it is shown before the check can see it.
            tail_from = max(0, limit - guard.lexicon.longest)
            tail = self.text[tail_from:]
            clean = normalise_for_matching(tail)
            start = guard.lexicon.incomplete_at(clean)
            if start is not None:
                limit = tail_from + (start if len(clean) == len(tail) else 0)
        chosen = None
        for end, strong in self._ends:
            if end > limit:
                break
            if strong or end - self._released >= MIN_PIECE:
                chosen = end
        return chosen

    async def _release(self, end: int) -> None:
        candidate = self.text[:end].lstrip()
        check = await self._check(candidate)
        if check is not None and check.verdict.tripped:
            self.held = check.verdict.kind or "output_guard"
            self._note()
            return
        if check is not None and self._quotes_system_prompt(candidate):
            self.held = "prompt_quote"
            self._note()
            return
        view = check.reply if check is not None else candidate
        rest = rest_after(self.shown, view)
        if rest is None:
            # Masking changed text already shown (a value split across pieces): show nothing more until the end.
            self.held = "inconsistent"
            self._note()
            return
        self._released = end
        self._ends = [e for e in self._ends if e[0] > end]
        if rest:
            self.shown += rest
            await self.inner.delta(rest)

    def _guard(self) -> OutputGuard | None:
        safety, session = self._deps.safety, self._ctx.session
        if safety is None or session is None:
            return None
        return safety.output_guard(session.tenant_id)

    def _system_prompt(self) -> str | None:
        prompt = self._ctx.prompt
        return prompt[0].content if prompt and prompt[0].role == "system" else None

    async def _check(self, candidate: str) -> OutputCheck | None:
        guard, safety, ctx = self._guard(), self._deps.safety, self._ctx
        if guard is None or safety is None or ctx.session is None:
            return None
        vault = ctx.pii
        if vault is None and (PLACEHOLDER.search(candidate) or safety.detector.find(candidate)):
            if not self._vault_loaded:
                meta = await self._deps.store.session_meta(ctx.session.id)
                self._vault, self._vault_loaded = safety.vault(meta.get("pii")), True
            vault = self._vault
        return guard.check(candidate, vault=vault, system_prompt=self._system_prompt(), trace=ctx.trace, generated=True)

    def _quotes_system_prompt(self, candidate: str) -> bool:
        guard = self._guard()
        return (
            guard is not None
            and guard.leaks.quoted(normalise_for_matching(candidate), self._system_prompt()) >= QUOTE_HOLD
        )

    def _note(self, *, replaced: bool = False) -> None:
        """What the customer saw of this reply, on its trace (and in the guard metrics)."""
        note: dict[str, Any] = {"shown_chars": len(self.shown)}
        if self.held is not None and self.held != "settled":
            note["held"] = self.held
        if replaced:
            note["replaced"] = True
        self._ctx.trace["stream"] = note
