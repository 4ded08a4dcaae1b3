"""`kefu eval intents | entities`: the numbers an operator reads, printed and written as JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from kefu.cli.main import app
from tests.conftest import DEMO_SHOP

TRAIN = {
    "track_order": [
        "where is my order",
        "track my parcel",
        "我的快递到哪了",
        "订单怎么还没到",
        "has it shipped",
        "物流查询",
    ],
    "refund_status": [
        "where is my refund",
        "refund not received",
        "退款到账了吗",
        "钱什么时候退",
        "refund status",
        "退款进度",
    ],
    "invoice": ["i need an invoice", "vat invoice please", "开发票", "发票抬头错了", "send me the invoice", "电子发票"],
    "none_of_these": ["what's the weather", "tell me a joke", "今天天气", "讲个笑话", "stock prices", "写首诗"],
}
TEST = [
    ("where's my package", "track_order"),
    ("退款还没到", "refund_status"),
    ("can I get an invoice", "invoice"),
    ("明天下雨吗", "none_of_these"),
]


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_eval_intents_on_csv_files_reports_every_number(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", [(t, label) for label, texts in TRAIN.items() for t in texts])
    test = _csv(tmp_path / "test.csv", TEST)
    out = tmp_path / "report.json"
    args = ["eval", "intents", "--train", str(train), "--test", str(test), "--oos-label", "none_of_these"]
    result = CliRunner().invoke(
        app, [*args, "--embedder", "hashing", "--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    for line in ("in-scope accuracy", "macro-F1", "OOS recall", "OOS precision", "stages", "LLM fallback share", "p99"):
        assert line in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["test_rows"] == 4 and report["labels"] == 4 and report["oos_test_rows"] == 1
    assert set(report) >= {"accuracy", "macro_f1", "oos_recall", "worst_confusions", "stage_share", "latency_ms"}
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"] > 0


def test_eval_intents_names_the_line_of_a_bad_csv(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\nhello,greeting\n,greeting\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["eval", "intents", "--train", str(train), "--test", str(train), "--embedder", "hashing"]
    )
    assert result.exit_code == 2 and f"{train}:3: empty text or label" in result.output


def test_eval_entities_on_the_demo_set(tmp_path: Path) -> None:
    out = tmp_path / "entities.json"
    test = DEMO_SHOP / "eval" / "entities_test.jsonl"
    result = CliRunner().invoke(
        app, ["eval", "entities", "--test", str(test), "--shop-dir", str(DEMO_SHOP), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["lines"] >= 200 and report["f1"] >= 0.9
    assert {"date", "order_number", "product", "amount", "phone"} <= set(report["per_type"])
