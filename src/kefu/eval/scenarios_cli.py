"""`kefu eval scenarios FILE`: play scripted conversations against kefu and report which ones broke."""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from kefu.errors import KefuError

SCRIPTED_REPLY = "This is a scripted test reply. 这是脚本测试回复。"
DEMO_CONNECTOR = "shop"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _settings_overrides(file: Path, shop_dir: Path | None) -> dict[str, Any]:
    """The shop kefu runs as: --shop-dir, else the configured one, else the scenario file's own folder when it is
    a shop directory (as `kefu demo` does, its knowledge directory is then synced at start-up)."""
    from kefu.config import load_settings

    configured = load_settings().shop.dir
    if shop_dir is None and configured is None and (file.parent / "shop.yaml").is_file():
        shop_dir = file.parent
    if shop_dir is None:
        return {}
    if not (shop_dir / "shop.yaml").is_file():
        raise _fail(f"--shop-dir {shop_dir}: no shop.yaml there")
    overrides: dict[str, Any] = {"shop": {"dir": shop_dir.resolve()}}
    if "KEFU_KNOWLEDGE__SOURCE_DIR" not in os.environ and (shop_dir / "knowledge").is_dir():
        overrides["knowledge"] = {"source_dir": (shop_dir / "knowledge").resolve()}
    return overrides


def scenarios_command(
    file: Annotated[Path, typer.Argument(help="A scenarios YAML file (docs/scenarios.md).")],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only the scenario with this name (repeatable).")
    ] = None,
    keyword: Annotated[
        str | None, typer.Option("-k", help="Run only the scenarios whose name contains this text.")
    ] = None,
    demo_backend: Annotated[
        bool,
        typer.Option(
            "--demo-backend",
            help="Run the demo shop's backend (lumo-shop) in process on a temporary database as connector 'shop', "
            "instead of calling the backend URL in actions.yaml.",
        ),
    ] = False,
    llm: Annotated[
        str, typer.Option("--llm", help="configured: the model the settings name; scripted: a fixed reply (fast).")
    ] = "configured",
    shop_dir: Annotated[
        Path | None,
        typer.Option(help="Shop directory (default: KEFU_SHOP__DIR, else the scenario file's folder if it is one)."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report here as JSON.")] = None,
) -> None:
    """Play scripted conversations against kefu; exit 1 when one fails, 2 for a bad file. 场景测试。"""
    from kefu.config import load_settings
    from kefu.eval import scenarios
    from kefu.llm.testing import ScriptedLLM

    if llm not in ("configured", "scripted"):
        raise _fail("--llm must be configured or scripted")
    try:
        settings = load_settings(**_settings_overrides(file, shop_dir))
    except KefuError as exc:
        raise _fail(str(exc)) from None
    model = ScriptedLLM(model="scenarios", default_reply=SCRIPTED_REPLY) if llm == "scripted" else None
    if demo_backend and settings.shop.dir is None:
        raise _fail("--demo-backend needs the demo shop directory: pass --shop-dir examples/demo_shop")

    def progress(result: scenarios.ScenarioResult) -> None:
        mark = typer.style("✓", fg=typer.colors.GREEN) if result.passed else typer.style("✗", fg=typer.colors.RED)
        typer.echo(f"{mark} {result.name} ({result.language}, {result.turns} turns, {result.seconds:.1f}s)")

    async def main() -> scenarios.ScenarioReport:
        async with AsyncExitStack() as stack:
            transports: dict[str, httpx.AsyncBaseTransport] = {}
            if demo_backend:
                assert settings.shop.dir is not None
                transports[DEMO_CONNECTOR] = await stack.enter_async_context(scenarios.demo_backend(settings.shop.dir))
            return await scenarios.run_scenarios(
                file,
                settings,
                llm=model,
                transports=transports,
                only=only or (),
                keyword=keyword,
                progress=progress,
            )

    try:
        report = asyncio.run(main())
    except KefuError as exc:  # a bad file (DataFileError, with its line) or a run that cannot start
        raise _fail(str(exc)) from None
    failures = report.failures_text()
    if failures:
        typer.echo("\n" + failures)
    typer.echo(f"\n{report.summary()} · {report.llm}")
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"written to {json_path}")
    if report.passed != report.total:
        raise typer.Exit(code=1)
