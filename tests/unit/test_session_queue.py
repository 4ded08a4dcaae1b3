"""One session's turns run one after another in a process; other sessions' turns are not held up."""

from __future__ import annotations

import asyncio

import pytest

from kefu.pipeline.session_queue import SessionQueue


async def test_turns_of_a_session_wait_for_each_other_and_other_sessions_do_not() -> None:
    queue = SessionQueue()
    order: list[str] = []
    release = asyncio.Event()

    async def turn(session: str, name: str, wait: bool = False) -> None:
        async with queue.turn(session):
            order.append(f"{name} start")
            if wait:
                await release.wait()
            order.append(f"{name} end")

    first = asyncio.create_task(turn("s1", "a", wait=True))
    await asyncio.sleep(0)
    second = asyncio.create_task(turn("s1", "b"))
    other = asyncio.create_task(turn("s2", "c"))
    await other  # another session's turn is answered while s1's first turn is still running
    await asyncio.sleep(0.01)
    assert order == ["a start", "c start", "c end"] and len(queue) == 1
    release.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["a end", "b start", "b end"]
    assert len(queue) == 0  # nothing kept once a session has no turn running


async def test_a_cancelled_turn_lets_the_next_one_run() -> None:
    queue = SessionQueue()
    entered = asyncio.Event()

    async def stuck() -> None:
        async with queue.turn("s1"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with queue.turn("s1"):
        assert len(queue) == 1
    assert len(queue) == 0
