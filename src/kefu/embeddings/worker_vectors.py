"""Query vectors shared by the worker processes of one `kefu serve --workers N` (`kefu.worker_memory`).

Each worker remembers the vectors it computed (`kefu.embeddings.shared.RecentQueries`), but a text new to the server
would still cost a model run in every worker that receives it: on the AVX2-only machine of 2026-12-07 the model took
1.58 ms of CPU per mixed turn with two workers against 0.70 ms with one. With this table a worker writes the vectors
its model computed, and looks there before running the model. A slot holds a keyed hash of the text, never the text.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kefu.worker_memory import SlotTable, attach


class WorkerVectors:
    """Float32 vectors of up to `max_dim` values by 16-byte key, in the workers' shared `vectors` table."""

    def __init__(self, table: SlotTable) -> None:
        self.table = table
        self.max_dim = table.payload_bytes // 4

    @classmethod
    def from_env(cls) -> WorkerVectors | None:
        """The table `kefu serve --workers N` made for its workers, or None (one worker, or the table is gone)."""
        table = attach("vectors")
        return cls(table) if table is not None else None

    def get(self, key: bytes) -> npt.NDArray[np.float32] | None:
        payload = self.table.get(key)
        if payload is None or len(payload) % 4:
            return None
        return np.frombuffer(bytearray(payload), dtype=np.float32)  # a copy of its own, writable like the model's

    def put(self, key: bytes, vector: npt.NDArray[np.float32]) -> bool:
        """Share `vector`; False when it is too long for the table (a remote server's, computed off this machine)."""
        if vector.ndim != 1 or vector.shape[0] > self.max_dim:
            return False
        return self.table.put(key, np.ascontiguousarray(vector, dtype=np.float32).tobytes())

    def close(self) -> None:
        self.table.close()
