"""Bridges a running turn to a streaming channel: the turn runs as a task, its events arrive on a queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kefu.pipeline import TurnContext, TurnInput, TurnResult, TurnRunner


@dataclass(frozen=True, slots=True)
class Started:
    session_id: str
    user_message_id: str


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Replaced:
    """The text streamed so far is withdrawn (a check replaced the reply): show `text`, the final reply, instead."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    result: TurnResult


TurnStreamEvent = Started | Delta | Replaced | Finished
_END = object()
_LEFT = object()


class QueueEvents:
    """A `TurnEvents` sink that puts every event on an asyncio queue."""

    streaming = True

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def started(self, ctx: TurnContext) -> None:
        assert ctx.session is not None and ctx.customer_message is not None
        self.queue.put_nowait(Started(ctx.session.id, ctx.customer_message.id))

    async def delta(self, text: str) -> None:
        self.queue.put_nowait(Delta(text))

    async def replace(self, text: str) -> None:
        self.queue.put_nowait(Replaced(text))


async def stream_turn(
    runner: TurnRunner,
    turn: TurnInput,
    *,
    finish_in: set[asyncio.Task[TurnResult]] | None = None,
    left: asyncio.Future[None] | None = None,
) -> AsyncIterator[TurnStreamEvent]:
    """Yield Started, Deltas (Replaced when a check withdrew them), then Finished. Errors from intake propagate.

    Closing the iterator early means the customer went away: the turn is cancelled (SSE: they closed
    the stream), or, with `finish_in`, left to finish in the background and parked in that set (WebSocket:
    a dropped socket is usually a network blip, and the widget fetches the stored reply on reconnect).
    `left` completing means the customer is gone for good (they closed the chat): the turn is cancelled
    even with `finish_in`, at once, whether or not an event was on its way.
    """
    events = QueueEvents()
    task = asyncio.create_task(runner.run(turn, events))
    task.add_done_callback(lambda _: events.queue.put_nowait(_END))

    def customer_left(_: object) -> None:
        events.queue.put_nowait(_LEFT)

    if left is not None:
        left.add_done_callback(customer_left)
    try:
        while True:
            item = await events.queue.get()
            if item is _END:
                yield Finished(task.result())
                return
            if item is _LEFT:
                return
            assert isinstance(item, Started | Delta | Replaced)
            yield item
    finally:
        if left is not None:
            left.remove_done_callback(customer_left)
        if not task.done():
            if finish_in is not None and not (left is not None and left.done()):
                finish_in.add(task)
                task.add_done_callback(finish_in.discard)
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                if left is not None:
                    # The socket may fail before its close code is read: a clean close seen later still cancels.
                    left.add_done_callback(lambda _: task.cancel())
            else:
                task.cancel()
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                # asyncio.wait, not gather: the server may cancel this consumer again and again while it waits
                # (anyio cancel scopes do), and gather would pass each cancel on into the turn while it closes its
                # model request and stores what was said.
                await asyncio.wait({task})
