"""Run a real llama.cpp OpenAI-compatible HTTP server (xllamacpp) on 127.0.0.1 in a child process.

The child runs ``python -m tests.support.llamacpp_server --model FILE.gguf``; it prints one line
``LISTENING http://127.0.0.1:PORT`` once the model is loaded, then serves until it is killed or its
stdin closes (so a crashed test run never leaves a model server behind). Tests and the benchmark use
`llamacpp_server()`, which starts the child, waits for that line and yields the endpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_PREFIX = "LISTENING "
_REPO_ROOT = Path(__file__).resolve().parents[2]


def bundled_model_path() -> Path:
    """The bundled GGUF, joined and verified into the repository's ``.kefu/models`` cache on first use."""
    from kefu.llm.model_assets import ensure_bundled_model

    return ensure_bundled_model(_REPO_ROOT / ".kefu" / "models")


def serve(model: Path, *, port: int, n_ctx: int, n_parallel: int, n_threads: int) -> None:
    """Load `model`, serve it on 127.0.0.1:`port` (0 picks a free port) and block until stdin closes."""
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(model)
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    # No web UI assets ship in the wheel, and a warm-up decode only delays readiness on a small CPU.
    params.ui = False
    params.warmup = False
    server = xlc.Server(params)
    print(f"{READY_PREFIX}{server.listening_address}", flush=True)
    sys.stdin.read()


@dataclass(frozen=True, slots=True)
class LlamaCppServer:
    """A running llama.cpp server child: its OpenAI base URL and the process, so tests can kill it."""

    base_url: str
    """Ends in ``/v1``, as an operator would configure it."""
    process: subprocess.Popen[str]
    log_path: Path

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash or an OOM kill would."""
        self.process.kill()
        self.process.wait(timeout=30)


def _read_ready_line(process: subprocess.Popen[str], timeout_s: float) -> str | None:
    # readline() blocks, so it runs in a thread and the caller keeps its own deadline.
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            if line.startswith(READY_PREFIX):
                lines.append(line[len(READY_PREFIX) :].strip())
                return

    reader = threading.Thread(target=read, name="llamacpp-ready", daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0] if lines else None


@contextmanager
def llamacpp_server(
    model: Path,
    *,
    n_ctx: int = 2048,
    n_parallel: int = 1,
    n_threads: int | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[LlamaCppServer]:
    """Start a llama.cpp server child for `model`, yield it once it listens, and stop it on exit."""
    threads = n_threads or min(2, os.cpu_count() or 1)
    command = [
        sys.executable,
        "-m",
        "tests.support.llamacpp_server",
        "--model",
        str(model),
        "--n-ctx",
        str(n_ctx),
        "--parallel",
        str(n_parallel),
        "--threads",
        str(threads),
    ]
    log_file = tempfile.NamedTemporaryFile(mode="w", prefix="llamacpp-server-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    process = subprocess.Popen(
        command,
        cwd=_REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
    )
    try:
        address = _read_ready_line(process, startup_timeout_s)
        if address is None:
            log_tail = log_path.read_text(errors="replace")[-2000:]
            state = f"exited with {process.poll()}" if process.poll() is not None else "still loading"
            raise RuntimeError(
                f"llama.cpp server did not report ready within {startup_timeout_s:.0f}s ({state}); "
                f"log {log_path}:\n{log_tail}"
            )
        yield LlamaCppServer(base_url=f"{address}/v1", process=process, log_path=log_path)
    finally:
        _stop(process)
        log_file.close()
        log_path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            stream.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="GGUF file to serve")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    serve(args.model, port=args.port, n_ctx=args.n_ctx, n_parallel=args.parallel, n_threads=args.threads)


if __name__ == "__main__":
    main()
