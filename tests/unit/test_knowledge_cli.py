"""`kefu kb …` and `kefu eval retrieval` as an operator runs them (real subprocesses, hashing embedder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_kefu(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kefu", *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    clean.update(
        {
            "KEFU_DATA_DIR": str(tmp_path / "data"),
            "KEFU_CONFIG": str(tmp_path / "none.yaml"),
            "KEFU_KNOWLEDGE__EMBEDDING__BACKEND": "hashing",
        }
    )
    return clean


def test_sync_list_remove_and_a_broken_file(env: dict[str, str], tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    (kb / "en").mkdir(parents=True)
    (kb / "en" / "returns.md").write_text("# Returns\n\n## Window\n\nReturn within 7 days.\n")
    (kb / "faq.csv").write_text("question,answer\nWho pays for returns?,The buyer.\n")
    (kb / "broken.docx").write_bytes(b"not a zip")

    first = run_kefu("kb", "sync", str(kb), env=env)
    assert first.returncode == 1  # something failed; the rest went in
    assert "added     en/returns.md" in first.stdout and "added     faq.csv" in first.stdout
    assert "failed    broken.docx: cannot be read as DOCX" in first.stderr

    (kb / "broken.docx").unlink()
    again = run_kefu("kb", "sync", str(kb), "--json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert sorted(report["unchanged"]) == ["en/returns.md", "faq.csv"] and report["embedded"] == 0

    listed = json.loads(run_kefu("kb", "list", "--json", env=env).stdout)
    assert {d["source"] for d in listed} == {"en/returns.md", "faq.csv"}
    removed = run_kefu("kb", "remove", "en/returns.md", env=env)
    assert removed.returncode == 0 and "removed   en/returns.md" in removed.stdout
    missing = run_kefu("kb", "remove", "nope.md", env=env)
    assert missing.returncode == 2 and "no knowledge document 'nope.md'" in missing.stderr
    status = json.loads(run_kefu("kb", "status", "--json", env=env).stdout)
    assert status["documents"] == 1 and status["embedder"] == "testing:hashing"


def test_eval_retrieval_prints_and_writes_every_mode(env: dict[str, str], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps(line, ensure_ascii=False)
            for line in [
                {"id": "returns", "title": "Returns", "text": "Return any item within 7 days of delivery."},
                {"id": "shipping", "title": "Shipping", "text": "Orders over 99 yuan ship free."},
                {"id": "warranty", "title": "Warranty", "text": "Earbuds have a 12 month warranty."},
            ]
        )
    )
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        '{"query": "how many days to return an item", "relevant": ["returns"]}\n'
        '{"query": "is shipping free over 99 yuan", "relevant": ["shipping"]}\n'
    )
    output = tmp_path / "results.json"
    result = run_kefu(
        "eval", "retrieval", "--corpus", str(corpus), "--queries", str(queries), "--output", str(output), env=env
    )
    assert result.returncode == 0, result.stderr
    assert "| hybrid |" in result.stdout and "| bm25 |" in result.stdout and "recall@5" in result.stdout
    data = json.loads(output.read_text())
    assert set(data["modes"]) == {"hybrid", "dense", "bm25"} and data["queries"] == 2
    assert data["modes"]["hybrid"]["recall@5"] == 1.0 and data["modes"]["hybrid"]["latency_p99_ms"] > 0

    queries.write_text('{"query": "no relevant list"}\n')
    bad = run_kefu("eval", "retrieval", "--corpus", str(corpus), "--queries", str(queries), env=env)
    assert bad.returncode == 2 and "queries.jsonl:1: needs 'relevant'" in bad.stderr
