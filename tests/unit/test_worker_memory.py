"""The tables the workers of one `kefu serve --workers N` share in shared memory (`kefu.worker_memory`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import pytest

from kefu import worker_memory
from kefu.worker_memory import ENV, SlotTable, TableSize, attach, close_tables, create_tables, environment
from tests.support.worker_memory import tear_one_slot


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


@pytest.fixture
def table() -> Iterator[SlotTable]:
    created = SlotTable.create(TableSize(slots=8, payload_bytes=64))
    yield created
    created.close()


def test_what_one_process_stores_another_reads_until_a_newer_key_takes_its_slot(table: SlotTable) -> None:
    other = SlotTable.attach(table.name)
    assert other.get(_key("a")) is None
    assert table.put(_key("a"), b"payload of a")
    assert other.get(_key("a")) == b"payload of a"
    assert other.put(_key("a"), b"newer")
    assert table.get(_key("a")) == b"newer"

    # Direct mapping: among nine keys in eight slots two share one, and the later one wins it.
    keys = [_key(f"text {n}") for n in range(9)]
    for key in keys:
        table.put(key, key)
    assert sum(other.get(key) == key for key in keys) < len(keys)
    assert other.get(keys[-1]) == keys[-1]
    other.close()


def test_a_payload_too_long_or_a_malformed_key_is_refused(table: SlotTable) -> None:
    assert not table.put(_key("a"), b"x" * 65)
    assert not table.put(_key("a"), b"")
    assert not table.put(b"short", b"x")
    assert table.get(b"short") is None
    assert table.put(_key("a"), b"x" * 64) and table.get(_key("a")) == b"x" * 64


def test_a_slot_caught_mid_write_reads_as_a_miss(table: SlotTable) -> None:
    table.put(_key("a"), b"a payload long enough to be torn")
    tear_one_slot(table)
    assert table.get(_key("a")) is None
    table.put(_key("a"), b"written again")
    assert table.get(_key("a")) == b"written again"


def test_the_server_names_its_tables_to_the_workers_and_removes_them_on_exit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert attach("vectors") is None  # one worker: no tables

    tables = create_tables()
    assert set(tables) == {"vectors", "answers"}
    monkeypatch.setenv(ENV, environment(tables))
    vectors = attach("vectors")
    assert vectors is not None and vectors.name == tables["vectors"].name
    vectors.close()
    assert attach("unknown") is None

    close_tables(tables)
    with pytest.raises(FileNotFoundError):
        SlotTable.attach(tables["answers"].name)
    with caplog.at_level(logging.WARNING, logger="kefu.worker_memory"):
        assert attach("answers") is None
    assert f"worker table answers '{tables['answers'].name}' unavailable" in caplog.text


def test_a_block_that_is_not_a_table_is_refused(table: SlotTable) -> None:
    from multiprocessing import shared_memory

    stranger = shared_memory.SharedMemory(create=True, size=64)
    try:
        with pytest.raises(ValueError, match="not one of kefu's worker tables"):
            SlotTable.attach(stranger.name)
    finally:
        stranger.close()
        stranger.unlink()


def test_tables_the_machine_cannot_hold_are_refused_before_any_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block beyond the free shared memory would fail only when written, killing the worker: refused up front
    (`kefu serve` then warns and its workers work on their own)."""
    monkeypatch.setattr(worker_memory, "TABLES", {"vectors": TableSize(slots=2**40, payload_bytes=4096)})
    with pytest.raises(OSError, match="MiB free, the workers' tables need"):
        create_tables()
