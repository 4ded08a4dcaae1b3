"""What every benchmark section shares: its options and result types, percentiles, the machine, helper processes."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SHOP = REPO_ROOT / "examples" / "demo_shop"
"""The demo shop every section measures kefu with."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """How a section should run: `quick` is a smoke run with tiny counts; `work_dir` is scratch space."""

    quick: bool
    work_dir: Path
    kefu_src: Path | None = None
    """Serve kefu from this source tree (its `src` dir) instead of the installed one: A/B comparisons."""


@dataclass(frozen=True, slots=True)
class Target:
    """A number an issue promised, with the value measured against it."""

    name: str
    value: float
    limit: float
    op: Literal["<", "<=", ">", ">="]
    unit: str

    @property
    def passed(self) -> bool:
        return {
            "<": self.value < self.limit,
            "<=": self.value <= self.limit,
            ">": self.value > self.limit,
            ">=": self.value >= self.limit,
        }[self.op]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(slots=True)
class SectionResult:
    """One section of docs/benchmarks.md: its markdown body, its raw numbers and its targets."""

    key: str
    title: str
    markdown: str
    data: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    load_average: tuple[float, float] | None = None
    """1-minute load average before and after the section: how busy the machine was meanwhile."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def progress(message: str) -> None:
    """One line on stdout, so that a long run shows where it is."""
    print(f"[bench]   {time.strftime('%H:%M:%S')} {message}", flush=True)


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(target: Target) -> str:
    return "✅ pass" if target.passed else "❌ fail"


def targets_table(targets: Sequence[Target]) -> str:
    """A section's targets: what was measured against its limit, and the verdict."""
    return md_table(
        ["target", "measured", "limit", "result"],
        [[t.name, f"{t.value:g} {t.unit}", f"{t.op} {t.limit:g} {t.unit}", verdict(t)] for t in targets],
    )


# --- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (Linux {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _versions(names: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


_PACKAGES = (
    "kefu",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "httpx",
    "aiohttp",
    "sqlalchemy",
    "aiosqlite",
    "pydantic",
    "xllamacpp",
)


def reference_workload_ms(rounds: int = 5) -> float:
    """Best of `rounds` timings of a fixed pure-Python workload (one core): how fast this machine was during the run.

    Shared machines vary by 2x and more from hour to hour; this figure lets two reports be compared (a run whose
    reference takes twice as long will show every absolute latency about twice as high)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += (i * i) % 7
        best = min(best, (time.perf_counter() - started) * 1000)
    return round(best, 1)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, OS, Python and the packages on the hot path."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "reference_workload_ms": reference_workload_ms(),
        "packages": _versions(_PACKAGES),
    }


# --- helper processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in task.read_text().split()]
        except OSError:
            continue
    return kids


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its live descendants (uvicorn's workers) have used so far."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After the ")" that ends the command name: state is field 0, utime field 11, stime field 12.
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        pending += _children(current)
    return total


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _wait_for_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not answer GET {path} within {timeout_s:.0f}s")


@dataclass(frozen=True, slots=True)
class ServerProcess:
    pid: int
    base_url: str
    port: int
    log_path: Path


@contextmanager
def server_process(
    args: Sequence[str],
    *,
    port: int,
    ready_path: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 60.0,
) -> Iterator[ServerProcess]:
    """Run `python args...` as its own process (own event loop, own GIL) until the block ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            try:
                _wait_for_http(port, ready_path, proc, startup_timeout_s)
            except Exception as exc:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(args)}: {exc}\n--- its output ---\n{tail}") from None
            yield ServerProcess(pid=proc.pid, base_url=f"http://127.0.0.1:{port}", port=port, log_path=log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def kefu_process(
    *, port: int, log_path: Path, env: Mapping[str, str], startup_timeout_s: float = 300.0
) -> AbstractContextManager[ServerProcess]:
    """`kefu serve` (as `python -m kefu serve`) with `env`, ready once `/readyz` answers; a cold data dir takes minutes
    (the intent classifier trains, the shop's knowledge is indexed), hence the long default wait."""
    return server_process(
        ["-m", "kefu", "serve"],
        port=port,
        ready_path="/readyz",
        log_path=log_path,
        env=env,
        startup_timeout_s=startup_timeout_s,
    )


def bundled_embedder() -> Any:
    """The bundled embedding model as kefu ships it (the default engine of `knowledge.embedding`)."""
    from kefu.config import EmbeddingSettings
    from kefu.embeddings.registry import build_embedder

    return build_embedder(EmbeddingSettings())


def bundled_label() -> str:
    """How the reports name the shipped embedder: the model and the engine running it."""
    from kefu.config import EmbeddingSettings

    return f"multilingual-e5-small ({EmbeddingSettings().engine})"
