"""Operator data files report the file and line of a mistake; prompts render from templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.errors import ConfigError, DataFileError
from kefu.prompts import PromptLibrary
from kefu.shop import ShopProfile, load_shop


def test_shop_yaml_mistake_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(
        "shop:\n  name:\n    zh: 鹿末\n    en: Lumo\npolicy_summary:\n  zh: 七天无理由退货\n  en: ''\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFileError) as err:
        load_shop(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'shop.yaml'}:7: policy_summary.en:")


def test_broken_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text("shop:\n  name:\n    zh: 鹿末\n    en: [Lumo\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"shop\.yaml:\d+: invalid YAML"):
        load_shop(tmp_path)


def test_missing_shop_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"shop\.yaml: file not found"):
        load_shop(tmp_path)


def test_system_prompt_follows_language_and_is_stable() -> None:
    prompts = PromptLibrary()
    shop = ShopProfile.model_validate(
        {
            "shop": {"name": {"zh": "鹿末", "en": "Lumo"}},
            "policy_summary": {"zh": "满99包邮", "en": "Free shipping over 99"},
        }
    )
    zh = prompts.render("system", shop=shop, language="zh")
    en = prompts.render("system", shop=shop, language="en")
    assert "鹿末" in zh and "满99包邮" in zh and "Lumo" not in zh
    assert "Lumo" in en and "Free shipping over 99" in en
    assert prompts.render("system", shop=shop, language="zh") == zh
    assert "抱歉" in prompts.reply("fallback_error", "zh") and "Sorry" in prompts.reply("fallback_error", "en")


def test_unknown_prompt_version_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"no prompt version 'v9'; available: \['v1'\]"):
        PromptLibrary("v9")
