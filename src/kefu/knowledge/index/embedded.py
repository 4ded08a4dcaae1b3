"""The default index: faiss (exact inner product) + BM25 (bm25s over jieba terms) in process, saved in data_dir.

Each knowledge version is saved as its own directory (`v<version>/`), written under a temporary name and
renamed into place, so a worker never reads a half-written index and another worker can load the version
it was told about without rebuilding it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kefu.knowledge.index.base import IndexChanges
from kefu.knowledge.index.fusion import reciprocal_rank_fusion
from kefu.knowledge.types import ChunkInfo, IndexedChunk, SearchFilters, SearchHit, SearchMode, Vector

log = logging.getLogger(__name__)
_KEEP_VERSIONS = 3
"""Saved versions kept on disk: a worker may still be loading the one before the newest."""
_FORMAT = 1


@dataclass(slots=True)
class _State:
    """One immutable knowledge version as searched: swapped whole, so a search never sees a half update."""

    version: int
    infos: list[ChunkInfo]
    vectors: npt.NDArray[np.float32]
    faiss_index: Any
    bm25: Any
    masks: dict[SearchFilters, npt.NDArray[np.bool_]]

    def mask(self, filters: SearchFilters) -> npt.NDArray[np.bool_]:
        cached = self.masks.get(filters)
        if cached is None:
            cached = np.fromiter((filters.accepts(i) for i in self.infos), dtype=np.bool_, count=len(self.infos))
            if len(self.masks) > 256:  # filter combinations are few (tenant × language); bound it anyway
                self.masks.clear()
            self.masks[filters] = cached
        return cached


class EmbeddedIndex:
    """faiss + BM25 fused by RRF, in process; rebuilt from the chunks on every knowledge change."""

    name = "embedded"
    shared = False

    def __init__(self, directory: Path, dim: int, *, rrf_k: int = 60, bm25_weight: float = 1.0) -> None:
        self.directory = directory
        self.dim = dim
        self.rrf_k = rrf_k
        self.bm25_weight = bm25_weight
        self._state: _State | None = None
        self._lock = threading.Lock()
        import faiss

        # One query at a time is far below OpenMP's break-even; threads would only fight the event loop.
        faiss.omp_set_num_threads(1)

    @property
    def version(self) -> int | None:
        return self._state.version if self._state else None

    def _path(self, version: int) -> Path:
        return self.directory / f"v{version}"

    def needs_rebuild(self, version: int, expected_chunks: int) -> bool:
        if self._state is not None and self._state.version == version:
            return False
        meta = self._path(version) / "meta.json"
        try:
            saved = json.loads(meta.read_text())
        except (OSError, ValueError):
            return True
        return bool(
            saved.get("format") != _FORMAT or saved.get("dim") != self.dim or saved.get("count") != expected_chunks
        )

    def open(self, version: int) -> None:
        if self._state is not None and self._state.version == version:
            return
        import bm25s

        path = self._path(version)
        infos = [ChunkInfo(**row) for row in json.loads((path / "chunks.json").read_text(encoding="utf-8"))]
        vectors = np.load(path / "vectors.npy")
        bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False) if infos else None
        self._swap(version, infos, vectors, bm25)

    def rebuild(self, version: int, chunks: Sequence[IndexedChunk]) -> None:
        import bm25s

        infos = [c.info for c in chunks]
        vectors = (
            np.vstack([c.vector for c in chunks]).astype(np.float32)
            if chunks
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        bm25 = None
        if chunks:
            bm25 = bm25s.BM25()
            # An empty term list would make bm25s drop the document and shift every later index.
            bm25.index([list(c.tokens) or ["\u2205"] for c in chunks], show_progress=False)
        self._save(version, infos, vectors, bm25)
        self._swap(version, infos, vectors, bm25)

    def update(self, version: int, changes: IndexChanges) -> bool:
        return False  # BM25 statistics are corpus-wide: a rebuild is simplest and takes well under a second

    def _swap(self, version: int, infos: list[ChunkInfo], vectors: npt.NDArray[np.float32], bm25: Any) -> None:
        import faiss

        index = faiss.IndexFlatIP(self.dim)
        if len(infos):
            index.add(np.ascontiguousarray(vectors))
        with self._lock:
            self._state = _State(version, infos, vectors, index, bm25, {})

    def _save(self, version: int, infos: list[ChunkInfo], vectors: npt.NDArray[np.float32], bm25: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(version)
        if final.exists():
            return  # another worker saved this version already; versions never change once written
        staging = self.directory / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            rows = [asdict(i) for i in infos]
            (staging / "chunks.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
            np.save(staging / "vectors.npy", vectors)
            if bm25 is not None:
                bm25.save(str(staging / "bm25"), show_progress=False)
            meta = {"format": _FORMAT, "version": version, "count": len(infos), "dim": self.dim}
            (staging / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune(version)

    def _prune(self, newest: int) -> None:
        versions = sorted(
            (int(p.name[1:]) for p in self.directory.glob("v*") if p.name[1:].isdigit()),
            reverse=True,
        )
        for old in versions[_KEEP_VERSIONS:]:
            if old < newest:
                shutil.rmtree(self._path(old), ignore_errors=True)

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
        state = self._state
        if state is None or not state.infos:
            return []
        mask = state.mask(filters)
        if not mask.any():
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        dense_ids: list[int] = []
        if mode in ("hybrid", "dense"):
            dense_ids = self._dense(state, query, mask, candidates)
        bm25_ids: list[int] = []
        if mode in ("hybrid", "bm25") and terms and state.bm25 is not None:
            scores = np.asarray(state.bm25.get_scores(list(terms)), dtype=np.float32)
            scores[~mask] = 0.0
            positive = int(np.count_nonzero(scores > 0))
            if positive:
                top = min(candidates, positive)
                best = np.argpartition(-scores, top - 1)[:top]
                bm25_ids = [int(i) for i in best[np.argsort(-scores[best], kind="stable")]]
        dense_rank = {i: r for r, i in enumerate(dense_ids, start=1)}
        bm25_rank = {i: r for r, i in enumerate(bm25_ids, start=1)}
        fused = reciprocal_rank_fusion(
            [[str(i) for i in dense_ids], [str(i) for i in bm25_ids]], self.rrf_k, (1.0, self.bm25_weight)
        )[:k]
        hits = []
        for key, score in fused:
            i = int(key)
            hits.append(
                SearchHit(
                    chunk=state.infos[i],
                    score=score,
                    dense=float(state.vectors[i] @ query[0]),
                    dense_rank=dense_rank.get(i),
                    bm25_rank=bm25_rank.get(i),
                )
            )
        return hits

    @staticmethod
    def _dense(
        state: _State, query: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], candidates: int
    ) -> list[int]:
        import faiss

        top = min(candidates, int(mask.sum()))
        if mask.all():
            _, ids = state.faiss_index.search(query, top)
        else:
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
            params = faiss.SearchParameters()
            params.sel = selector
            _, ids = state.faiss_index.search(query, top, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    def count(self) -> int:
        return len(self._state.infos) if self._state else 0

    def close(self) -> None:
        self._state = None
