"""Tables the worker processes of one `kefu serve --workers N` share on their machine, in shared memory.

Each worker remembers what it worked out for recent texts, but with N workers a text new to the server would be
worked out again in every worker that receives it: the query vector (the embedding model, several ms of CPU) and
the answer (the whole pipeline). The serving process creates one block of shared memory per table before it starts
its workers (`create_tables`) and names them to the workers in `KEFU_WORKER_MEMORY`; each worker attaches to the
tables it uses (`attach`), writes there what it computed and looks there before computing it.

Memory only: the blocks are removed when the serving process exits (by Python's resource tracker if that process is
killed), and are readable by kefu's own user only.

A table is a fixed array of slots, each a 16-byte key, a checksum, a length and a payload of up to `payload_bytes`.
A key's first bytes pick its slot (direct mapping: a newer key takes an older one's place). No lock: a writer copies
the payload into the slot, then the slot's header; a reader copies both and checks the checksum (a keyed hash of
key, length and payload), so a read torn by a concurrent write, or a slot two workers wrote at the same moment,
reads as a miss, which costs the reader only the work the table would have spared it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import cast

log = logging.getLogger(__name__)

ENV = "KEFU_WORKER_MEMORY"
"""Names the blocks to the workers (`vectors=psm_…,answers=psm_…`); set by `kefu serve --workers N`, not by hand."""


@dataclass(frozen=True, slots=True)
class TableSize:
    slots: int
    payload_bytes: int

    @property
    def block_bytes(self) -> int:
        """The shared memory a table of this size takes: its header, then its slots."""
        return _HEADER.size + self.slots * (_SLOT_HEAD + self.payload_bytes)


TABLES = {
    "vectors": TableSize(slots=8192, payload_bytes=4 * 384),
    "answers": TableSize(slots=4096, payload_bytes=4096 - 32),
}
"""The query vectors (the bundled model's 384 floats; about 12.8 MiB, twice a worker's own memo, for the collisions
of direct mapping) and the answer cache's entries (16 MiB; an entry too long for a slot stays in its worker)."""

_SHM_DIR = "/dev/shm"
_MAGIC = b"kefushm1"
_HEADER = struct.Struct("<8sII")  # magic, slots, payload bytes per slot
_SLOT_HEAD = 32  # key (16), checksum (8), payload length (4), unused (4)
KEY_BYTES = 16
_CHECK = 8


def _checksum(key: bytes, length: bytes, payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK, key=key + length).digest()


class SlotTable:
    """One table in a block of shared memory: payloads by 16-byte key."""

    def __init__(self, block: shared_memory.SharedMemory, *, owner: bool) -> None:
        buf = block.buf
        magic, slots, payload = cast(tuple[bytes, int, int], _HEADER.unpack_from(buf, 0)) if buf else (b"", 0, 0)
        if magic != _MAGIC or slots < 1 or payload < 1:
            block.close()
            raise ValueError(f"shared memory block {block.name!r} is not one of kefu's worker tables")
        self._block = block
        self._buf: memoryview | None = buf
        self._owner = owner
        self.slots = slots
        self.payload_bytes = payload
        self._slot_size = _SLOT_HEAD + payload

    @property
    def name(self) -> str:
        return self._block.name

    @classmethod
    def create(cls, size: TableSize) -> SlotTable:
        """A new, empty table; its creator removes it on `close`."""
        block = shared_memory.SharedMemory(create=True, size=size.block_bytes)
        if block.buf is not None:
            _HEADER.pack_into(block.buf, 0, _MAGIC, size.slots, size.payload_bytes)
        return cls(block, owner=True)

    @classmethod
    def attach(cls, name: str) -> SlotTable:
        """A table another process created (`FileNotFoundError` when it is gone, `ValueError` when not a table)."""
        return cls(shared_memory.SharedMemory(name=name), owner=False)

    def slot_start(self, index: int) -> int:
        """Where slot `index` begins in the block (its header, then its payload)."""
        return _HEADER.size + index * self._slot_size

    def _start(self, key: bytes) -> int:
        return self.slot_start(int.from_bytes(key[:8], "little") % self.slots)

    def get(self, key: bytes) -> bytes | None:
        """The payload stored under `key`, or None: never stored, replaced since, or caught mid-write."""
        buf = self._buf
        if buf is None or len(key) != KEY_BYTES:
            return None
        start = self._start(key)
        head = bytes(buf[start : start + _SLOT_HEAD])
        if head[:KEY_BYTES] != key:
            return None
        length = head[24:28]
        size = int.from_bytes(length, "little")
        if not 0 < size <= self.payload_bytes:
            return None
        payload = bytes(buf[start + _SLOT_HEAD : start + _SLOT_HEAD + size])
        if _checksum(key, length, payload) != head[KEY_BYTES : KEY_BYTES + _CHECK]:
            return None
        return payload

    def put(self, key: bytes, payload: bytes) -> bool:
        """Store `payload` under `key`, in place of whatever held its slot; False when it does not fit a slot."""
        buf = self._buf
        if buf is None or len(key) != KEY_BYTES or not 0 < len(payload) <= self.payload_bytes:
            return False
        length = len(payload).to_bytes(4, "little")
        start = self._start(key)
        buf[start + _SLOT_HEAD : start + _SLOT_HEAD + len(payload)] = payload
        buf[start : start + _SLOT_HEAD] = key + _checksum(key, length, payload) + length + bytes(4)
        return True

    def close(self) -> None:
        """Detach; the creator also removes the block (workers still attached keep their mapping until they exit)."""
        if self._buf is None:
            return
        self._buf = None
        self._block.close()
        if self._owner:
            try:
                self._block.unlink()
            except FileNotFoundError:
                pass


def create_tables(kinds: Iterable[str] | None = None) -> dict[str, SlotTable]:
    """The tables of `kinds` (default: all), new and empty, for the serving process to name to its workers.

    `OSError` when the machine's shared memory cannot hold them (a container's /dev/shm is 64 MiB by default): the
    space is checked first, because a block created beyond it fails only when written, and then kills the worker.
    """
    sizes = {kind: TABLES[kind] for kind in (TABLES if kinds is None else kinds)}
    needed = sum(size.block_bytes for size in sizes.values())
    if os.path.isdir(_SHM_DIR):
        stats = os.statvfs(_SHM_DIR)
        if stats.f_bavail * stats.f_frsize < needed:
            free = stats.f_bavail * stats.f_frsize
            raise OSError(f"{_SHM_DIR} has {free // 2**20} MiB free, the workers' tables need {needed // 2**20} MiB")
    tables: dict[str, SlotTable] = {}
    try:
        for kind, size in sizes.items():
            tables[kind] = SlotTable.create(size)
    except BaseException:
        close_tables(tables)
        raise
    return tables


def environment(tables: dict[str, SlotTable]) -> str:
    """The value of `KEFU_WORKER_MEMORY` that names `tables` to the workers."""
    return ",".join(f"{kind}={table.name}" for kind, table in tables.items())


def close_tables(tables: dict[str, SlotTable]) -> None:
    for table in tables.values():
        table.close()


def attach(kind: str) -> SlotTable | None:
    """This worker's view of the server's `kind` table; None for a server of one worker, or a table gone (logged)."""
    named = dict(part.split("=", 1) for part in os.environ.get(ENV, "").split(",") if "=" in part)
    name = named.get(kind)
    if not name:
        return None
    try:
        return SlotTable.attach(name)
    except (OSError, ValueError) as exc:
        log.warning("worker table %s %r unavailable (%s): this worker works on its own", kind, name, exc)
        return None
