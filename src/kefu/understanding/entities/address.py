"""Postal addresses in Chinese (省/市/区/路/号) and English (number, street, city) inside a message."""

from __future__ import annotations

import re

from kefu.understanding.types import Entity

_PROVINCES = (
    "北京 天津 上海 重庆 河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 湖南 广东 海南 四川 "
    "贵州 云南 陕西 甘肃 青海 台湾 内蒙古 广西 西藏 宁夏 新疆 香港 澳门"
).split()
_CITIES = (
    "广州 深圳 杭州 南京 苏州 无锡 宁波 温州 厦门 福州 泉州 成都 武汉 长沙 郑州 西安 济南 青岛 大连 沈阳 长春 "
    "哈尔滨 石家庄 太原 合肥 南昌 南宁 海口 三亚 贵阳 昆明 兰州 西宁 银川 乌鲁木齐 拉萨 呼和浩特 佛山 东莞 "
    "珠海 中山 惠州 常州 南通 徐州 扬州 嘉兴 绍兴 金华 台州 烟台 潍坊 洛阳 宜昌 襄阳 株洲 绵阳 桂林 "
    "Shanghai Beijing Shenzhen Guangzhou Hangzhou Nanjing Suzhou Chengdu Wuhan Xiamen Tianjin Chongqing"
).split()
_START = "|".join(sorted((re.escape(p) for p in (*_PROVINCES, *_CITIES) if not p.isascii()), key=len, reverse=True))
_ZH_ADDRESS = re.compile(
    rf"(?:{_START})(?:省|市|自治区|壮族自治区|回族自治区|维吾尔自治区|特别行政区)?"
    # a single space inside ("文三路 100 号") is part of the address; one at the end is not
    r"(?:[\u4e00-\u9fffA-Za-z0-9#\-－]| (?=[\u4e00-\u9fffA-Za-z0-9#])){2,40}"
)
_ZH_MARKER = re.compile(r"[区县市镇乡村路街道巷弄号楼栋幢室]")
# Words that end an address written inside a sentence ("…702室，能改吗").
_ZH_TRAILER = re.compile(
    r"(?:的快递|的订单|可以吗|可以|能不能|能|吗|呢|吧|啊|了|的|谢谢|麻烦|帮我|请|改成|改为|没有|这个)+$"
)
_EN_STREET = r"(?:Road|Rd|Street|St|Avenue|Ave|Lane|Ln|Boulevard|Blvd|Drive|Dr|Way|Court|Ct|Highway|Hwy|Place|Pl)"
_EN_ADDRESS = re.compile(
    rf"(?:(?:Room|Rm|Apt|Apartment|Unit|Flat|Suite)\.?\s*[\w-]+,?\s*)?"
    rf"(?:(?:No\.|#)\s*)?\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][A-Za-z'-]+\s+){{1,4}}{_EN_STREET}\b\.?"
    r"(?:,\s*(?:[A-Z][A-Za-z'-]+)(?:\s+[A-Z][A-Za-z'-]+)*){0,4}(?:,?\s*\d{5,6})?"
)


class AddressExtractor:
    """Finds one address per language; the value is the address as written, trimmed of the sentence around it."""

    def extract(self, text: str) -> list[Entity]:
        found: list[Entity] = []
        for m in _ZH_ADDRESS.finditer(text):
            surface = _ZH_TRAILER.sub("", m.group(0).strip()).rstrip()
            # A place name alone ("上海", "发到新疆几天") is a destination, not an address.
            if len(surface) < 6 or len(_ZH_MARKER.findall(surface[2:])) < 2:
                continue
            province = next((p for p in _PROVINCES if surface.startswith(p)), None)
            attrs = {"province": province} if province else {}
            found.append(Entity("address", surface, surface, m.start(), m.start() + len(surface), attrs=attrs))
        for m in _EN_ADDRESS.finditer(text):
            surface = m.group(0).rstrip(" ,.")
            found.append(Entity("address", surface, surface, m.start(), m.start() + len(surface)))
        return found
