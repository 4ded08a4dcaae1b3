"""Recognising a province typed in Chinese or English, and whether Lumo delivers there."""

from __future__ import annotations

from collections.abc import Iterable

PROVINCE_EN = {
    "北京": "Beijing", "天津": "Tianjin", "上海": "Shanghai", "重庆": "Chongqing", "河北": "Hebei",
    "山西": "Shanxi", "内蒙古": "Inner Mongolia", "辽宁": "Liaoning", "吉林": "Jilin", "黑龙江": "Heilongjiang",
    "江苏": "Jiangsu", "浙江": "Zhejiang", "安徽": "Anhui", "福建": "Fujian", "江西": "Jiangxi",
    "山东": "Shandong", "河南": "Henan", "湖北": "Hubei", "湖南": "Hunan", "广东": "Guangdong",
    "广西": "Guangxi", "海南": "Hainan", "四川": "Sichuan", "贵州": "Guizhou", "云南": "Yunnan",
    "西藏": "Tibet", "陕西": "Shaanxi", "甘肃": "Gansu", "青海": "Qinghai", "宁夏": "Ningxia", "新疆": "Xinjiang",
}  # fmt: skip
"""Mainland provincial-level divisions, by the short Chinese name that shop.yaml's shipping zones use."""

_ALIASES = {"xizang": "西藏", "nei mongol": "内蒙古", "innermongolia": "内蒙古"}
_SUFFIXES_ZH = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")
_SUFFIXES_EN = (" autonomous region", " special administrative region", " province", " municipality", " sar")


def canonical_province(text: str) -> str | None:
    """The short Chinese name of a mainland province written as `浙江省`, `浙江`, `Zhejiang Province`…"""
    raw = text.strip()
    for suffix in _SUFFIXES_ZH:
        if raw.endswith(suffix) and len(raw) > len(suffix):
            raw = raw[: -len(suffix)]
            break
    if raw in PROVINCE_EN:
        return raw
    folded = " ".join(text.split()).casefold()
    for suffix in _SUFFIXES_EN:
        folded = folded.removesuffix(suffix)
    by_en = {en.casefold(): zh for zh, en in PROVINCE_EN.items()}
    return by_en.get(folded) or _ALIASES.get(folded)


def served_province(text: str, served: Iterable[str]) -> str | None:
    """The canonical province when Lumo delivers there (it appears in a shipping zone), else None."""
    province = canonical_province(text)
    return province if province is not None and province in set(served) else None
