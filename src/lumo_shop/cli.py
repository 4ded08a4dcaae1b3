"""`lumo-shop`: run the demo shop backend over HTTP, or (re)seed its database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lumo_shop.app import DEFAULT_TOKEN
from lumo_shop.dataset import find_data_dir

DEFAULT_DB = Path(".kefu") / "lumo-shop.db"

cli = typer.Typer(
    name="lumo-shop",
    help="The Lumo demo shop's back office as an HTTP service (kefu talks to it like to a real shop).",
    no_args_is_help=True,
    add_completion=False,
)

DbOption = Annotated[Path, typer.Option("--db", help="SQLite file; created and seeded when empty")]
DataOption = Annotated[
    Path | None, typer.Option("--data", help="Dataset directory [default: examples/demo_shop of this repo]")
]


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8100,
    db: DbOption = DEFAULT_DB,
    data: DataOption = None,
    now: Annotated[
        str, typer.Option(help="'as_of' (the dataset's snapshot time), 'real' (wall clock) or an ISO time")
    ] = "as_of",
    token: Annotated[str, typer.Option(envvar="LUMO_SHOP_TOKEN", help="Bearer token clients must send")] = (
        DEFAULT_TOKEN
    ),
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the backend (seeding the database on first start)."""
    import uvicorn

    from lumo_shop.app import create_app

    try:
        app = create_app(db, _data_dir(data), now=now, token=token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--now") from None
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@cli.command("seed")
def seed_command(
    db: DbOption = DEFAULT_DB,
    data: DataOption = None,
    reset: Annotated[bool, typer.Option("--reset", help="Drop every table (and the write log) first")] = False,
) -> None:
    """Load the dataset into the database (does nothing when it is already seeded, unless --reset)."""
    from lumo_shop.seed import seed

    loaded = seed(db, _data_dir(data), reset=reset)
    typer.echo(f"{'seeded' if loaded else 'already seeded, left as is'}: {db}")


def _data_dir(data: Path | None) -> Path:
    try:
        return find_data_dir(data)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None


def main() -> None:
    cli()
