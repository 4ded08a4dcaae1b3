"""intents.yaml: the demo catalogue is complete, and an operator's mistake is reported with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.errors import DataFileError
from kefu.understanding import Handler, load_catalogue
from tests.conftest import DEMO_SHOP

GOOD_INTENT = """\
  - name: {name}
    description: {{zh: 查订单, en: Order status}}
    handler: {handler}
    examples:
      zh: [我的订单到哪了, 查物流]
      en: [where is my order]
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text("version: 1\nintents:\n" + body, encoding="utf-8")
    return path


def test_demo_catalogue_covers_the_shop_in_both_languages() -> None:
    catalogue = load_catalogue(DEMO_SHOP / "intents.yaml")
    assert len(catalogue.intents) >= 25
    for intent in catalogue.intents:
        assert len(intent.examples.zh) >= 10 and len(intent.examples.en) >= 10, intent.name
        assert intent.description.zh and intent.description.en
    handlers = {i.handler for i in catalogue.intents}
    assert handlers == set(Handler), "every handler kind is used by some intent"
    assert catalogue.get("human_agent") is not None and "转人工" in catalogue.get("human_agent").rules.keywords  # type: ignore[union-attr]
    assert len(catalogue.out_of_scope.examples.all()) >= 40


def test_catalogue_fingerprint_changes_with_its_examples(tmp_path: Path) -> None:
    first = load_catalogue(_write(tmp_path, GOOD_INTENT.format(name="track_order", handler="tool_agent")))
    second = load_catalogue(
        _write(tmp_path, GOOD_INTENT.format(name="track_order", handler="tool_agent").replace("查物流", "查快递"))
    )
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (GOOD_INTENT.format(name="track_order", handler="robot"), 5, "intents.0.handler: Input should be"),
        (GOOD_INTENT.format(name="Track Order", handler="faq"), 3, "intents.0.name: Value error, intent names"),
        (
            GOOD_INTENT.format(name="ab", handler="faq") + GOOD_INTENT.format(name="ab", handler="faq"),
            None,
            "defined twice",
        ),
        (
            GOOD_INTENT.format(name="track_order", handler="faq")
            + "    rules:\n      patterns:\n        - {regex: '(unclosed'}\n",
            11,
            "invalid regular expression",
        ),
        (
            GOOD_INTENT.format(name="track_order", handler="faq") + "    requires_any: [order_id]\n",
            9,
            "unknown entity type(s) ['order_id']",
        ),
        (
            "  - name: track_order\n    description: {zh: 查, en: track}\n    handler: faq\n"
            "    examples: {zh: [一个], en: []}\n",
            3,
            "needs at least 2 examples",
        ),
    ],
)
def test_mistakes_name_the_file_and_line(tmp_path: Path, body: str, line: int | None, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(DataFileError) as err:
        load_catalogue(path)
    assert message in str(err.value)
    if line is not None:
        assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)
