"""The shop kefu speaks for: names, hours and the policy summary, loaded from `shop.yaml`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kefu.datafiles import load_yaml_model
from kefu.language import Language


class Bilingual(BaseModel):
    """A text in Chinese and English."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def pick(self, language: Language) -> str:
        return self.zh if language == "zh" else self.en


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ShopIdentity(_Section):
    name: Bilingual = Bilingual(zh="本店", en="our shop")


class SupportInfo(_Section):
    hours: str | None = None
    """Hours when human agents answer, e.g. "09:00-21:00" (every day), in `timezone`."""
    timezone: str | None = None


class ShopProfile(_Section):
    """What the bot must know about the shop itself; other keys in shop.yaml belong to other parts."""

    shop: ShopIdentity = ShopIdentity()
    support: SupportInfo = SupportInfo()
    policy_summary: Bilingual | None = None

    @property
    def name(self) -> Bilingual:
        return self.shop.name

    @property
    def support_hours(self) -> str | None:
        if self.support.hours and self.support.timezone:
            return f"{self.support.hours} ({self.support.timezone})"
        return self.support.hours


def load_shop(shop_dir: Path | None) -> ShopProfile:
    if shop_dir is None:
        return ShopProfile()
    return load_yaml_model(shop_dir / "shop.yaml", ShopProfile)
