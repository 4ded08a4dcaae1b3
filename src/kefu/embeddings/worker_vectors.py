"""Query vectors shared by the worker processes of one `kefu serve --workers N`, in shared memory.

Each worker remembers the vectors it computed (`kefu.embeddings.shared.RecentQueries`), but a text new to the
server would still cost a model run in every worker that receives it: on the AVX2-only machine of 2026-12-07 the
model took 1.58 ms of CPU per mixed turn with two workers against 0.70 ms with one. The serving process creates one
block of shared memory before it starts its workers (`WorkerVectors.create`) and names it to them in
`KEFU_WORKER_VECTORS`; each worker attaches to it (`WorkerVectors.from_env`), writes there what its model computed,
and looks there before running the model.

Memory only, like each worker's own memo: a slot holds a keyed hash of the text, never the text, and its vector. The
block is removed when the serving process exits (by Python's resource tracker if that process is killed).

No lock: slots are direct-mapped (a text's hash picks its slot, and a newer text takes an older one's place), each
written by two copies into the block (the vector, then its header) and checked on reading by a checksum over key,
length and vector. A read torn by a concurrent write, or a slot two workers wrote at the same moment, reads as a
miss, which costs one model run and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from multiprocessing import shared_memory
from typing import cast

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

ENV = "KEFU_WORKER_VECTORS"
"""Names the block to the workers; set by `kefu serve --workers N`, not by operators."""
MAX_DIM = 384
"""Floats a slot holds: the bundled model's vectors. Longer vectors (a remote embedding server's, computed off this
machine anyway) are not shared."""
SLOTS = 8192
"""About 12.8 MiB: twice a worker's own memo (`RecentQueries`), for the collisions of direct mapping."""

_MAGIC = b"kefuvec1"
_HEADER = struct.Struct("<8sII")  # magic, slots, max floats per slot
_SLOT_HEAD = 32  # key (16), checksum (8), floats (4), unused (4)
_KEY = 16
_CHECK = 8


def _checksum(key: bytes, length: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_CHECK, key=key + length).digest()


class WorkerVectors:
    """A fixed table of query vectors in a block of shared memory, keyed by 16-byte hashes."""

    def __init__(self, block: shared_memory.SharedMemory, *, owner: bool) -> None:
        buf = block.buf
        magic, slots, max_dim = cast(tuple[bytes, int, int], _HEADER.unpack_from(buf, 0)) if buf else (b"", 0, 0)
        if magic != _MAGIC or slots < 1 or max_dim < 1:
            block.close()
            raise ValueError(f"shared memory block {block.name!r} does not hold kefu's worker vectors")
        self._block = block
        self._buf: memoryview | None = buf
        self._owner = owner
        self.slots = slots
        self.max_dim = max_dim
        self._slot_size = _SLOT_HEAD + 4 * max_dim

    @property
    def name(self) -> str:
        return self._block.name

    @classmethod
    def create(cls, *, slots: int = SLOTS, max_dim: int = MAX_DIM) -> WorkerVectors:
        """A new, empty table; its creator removes it on `close`."""
        size = _HEADER.size + slots * (_SLOT_HEAD + 4 * max_dim)
        block = shared_memory.SharedMemory(create=True, size=size)
        if block.buf is not None:
            _HEADER.pack_into(block.buf, 0, _MAGIC, slots, max_dim)
        return cls(block, owner=True)

    @classmethod
    def attach(cls, name: str) -> WorkerVectors:
        """The table another process created (`FileNotFoundError` when it is gone, `ValueError` when not a table)."""
        return cls(shared_memory.SharedMemory(name=name), owner=False)

    @classmethod
    def from_env(cls) -> WorkerVectors | None:
        """The table `kefu serve --workers N` made for its workers, or None: one worker, or a table gone (logged)."""
        name = os.environ.get(ENV)
        if not name:
            return None
        try:
            return cls.attach(name)
        except (OSError, ValueError) as exc:
            log.warning("worker vectors %r unavailable (%s): each worker embeds on its own", name, exc)
            return None

    def _slot_start(self, index: int) -> int:
        return _HEADER.size + index * self._slot_size

    def _offset(self, key: bytes) -> int:
        return self._slot_start(int.from_bytes(key[:8], "little") % self.slots)

    def get(self, key: bytes) -> npt.NDArray[np.float32] | None:
        """The vector stored under `key` (a 16-byte hash), or None: never stored, replaced, or caught mid-write."""
        buf = self._buf
        if buf is None or len(key) != _KEY:
            return None
        start = self._offset(key)
        head = bytes(buf[start : start + _SLOT_HEAD])
        if head[:_KEY] != key:
            return None
        length = head[24:28]
        dim = int.from_bytes(length, "little")
        if not 0 < dim <= self.max_dim:
            return None
        data = bytes(buf[start + _SLOT_HEAD : start + _SLOT_HEAD + 4 * dim])
        if _checksum(key, length, data) != head[_KEY : _KEY + _CHECK]:
            return None
        return np.frombuffer(bytearray(data), dtype=np.float32)

    def put(self, key: bytes, vector: npt.NDArray[np.float32]) -> bool:
        """Store `vector` under `key`, in place of whatever held its slot; False when it is too long to share."""
        buf = self._buf
        dim = int(vector.shape[-1]) if vector.ndim == 1 else 0
        if buf is None or len(key) != _KEY or not 0 < dim <= self.max_dim:
            return False
        data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        length = dim.to_bytes(4, "little")
        start = self._offset(key)
        buf[start + _SLOT_HEAD : start + _SLOT_HEAD + len(data)] = data
        buf[start : start + _SLOT_HEAD] = key + _checksum(key, length, data) + length + bytes(4)
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
