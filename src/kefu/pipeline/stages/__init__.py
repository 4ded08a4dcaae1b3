"""Pipeline stages, one job each, all behind the `Stage` protocol."""

from __future__ import annotations

from typing import Protocol

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps


class Stage(Protocol):
    """One step of a turn: reads and updates the context; may set `ctx.done` to end the turn early."""

    name: str

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None: ...
