"""The one interface every knowledge index implements: dense + BM25 retrieval fused by RRF, with filters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kefu.knowledge.types import IndexedChunk, SearchFilters, SearchHit, SearchMode, Vector


@dataclass(frozen=True, slots=True)
class IndexChanges:
    """What one committed knowledge change did, for an index that can apply changes in place."""

    upserts: Sequence[IndexedChunk] = ()
    removed_docs: Sequence[str] = ()
    current_versions: Mapping[str, int] = field(default_factory=dict)
    """Re-ingested documents and their new version: chunks of any other version of them are stale."""


class KnowledgeIndex(Protocol):
    """Searches chunks; a `shared` index (Milvus) is one for every worker, a per-process one is rebuilt per worker.

    All methods block (CPU or network); the knowledge service calls them from a worker thread.
    """

    @property
    def name(self) -> str: ...

    @property
    def shared(self) -> bool:
        """True when every worker searches the same index, so a change is made once, by the writer."""
        ...

    def needs_rebuild(self, version: int, expected_chunks: int) -> bool:
        """Whether `open(version)` cannot serve that knowledge version (no saved copy, missing collection)."""
        ...

    def open(self, version: int) -> None:
        """Serve knowledge `version` from what is saved (only called when `needs_rebuild` said no)."""
        ...

    def rebuild(self, version: int, chunks: Sequence[IndexedChunk]) -> None:
        """Replace the whole index with `chunks`, which are knowledge `version`, and save it."""
        ...

    def update(self, version: int, changes: IndexChanges) -> bool:
        """Apply a change in place; False means this index wants a `rebuild` instead."""
        ...

    def search(
        self,
        text: str,
        terms: Sequence[str],
        vector: Vector,
        *,
        k: int,
        candidates: int,
        filters: SearchFilters,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        """The best `k` chunks for a query: its text, its BM25 terms (kefu's tokenizer) and its normalised vector."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...
