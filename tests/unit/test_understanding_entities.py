"""Entities with a fixed clock: what a customer mentioned, normalised, and resolved against the conversation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from kefu.eval.entities import run_entity_eval
from kefu.llm.types import Message
from kefu.understanding.entities import EntityExtractor
from tests.conftest import DEMO_SHOP

# The demo data's "now": Friday 20 November 2026, Shanghai time.
NOW = datetime.fromisoformat("2026-11-20T15:00:00+08:00")


@pytest.fixture(scope="module")
def extractor() -> EntityExtractor:
    return EntityExtractor.for_shop(DEMO_SHOP)


def values(extractor: EntityExtractor, text: str, kind: str, history: list[Message] | None = None) -> list[str]:
    return [e.value for e in extractor.extract(text, NOW, history or []) if e.type == kind]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("昨天买的", "2026-11-19"),
        ("前天签收的", "2026-11-18"),
        ("大前天", "2026-11-17"),
        ("明天能到吗", "2026-11-21"),
        ("上周五下的单", "2026-11-13"),
        ("下周一之前", "2026-11-23"),
        ("这周日", "2026-11-22"),
        ("周三签收", "2026-11-18"),
        ("3天前", "2026-11-17"),
        ("三天前", "2026-11-17"),
        ("两周前", "2026-11-06"),
        ("半个月前", "2026-11-05"),
        ("上个月5号", "2026-10-05"),
        ("11月3日买的", "2026-11-03"),
        ("2026年11月15日", "2026-11-15"),
        ("yesterday", "2026-11-19"),
        ("the day before yesterday", "2026-11-18"),
        ("last Monday", "2026-11-16"),
        ("last Friday", "2026-11-13"),
        ("next Friday", "2026-11-27"),
        ("5 days ago", "2026-11-15"),
        ("two weeks ago", "2026-11-06"),
        ("in 3 days", "2026-11-23"),
        ("on Nov 17", "2026-11-17"),
        ("3rd November 2026", "2026-11-03"),
        ("bought on 11/12", "2026-11-12"),
    ],
)
def test_relative_and_absolute_dates_resolve_against_the_turns_clock(
    extractor: EntityExtractor, text: str, expected: str
) -> None:
    assert values(extractor, text, "date") == [expected]


def test_no_date_where_there_is_none(extractor: EntityExtractor) -> None:
    for text in ("我买了5号码的", "may I ask something", "地址是世纪大道88号502室", "三天没动了"):
        assert values(extractor, text, "date") == [], text


def test_shop_numbers_phones_and_emails_are_normalised(extractor: EntityExtractor) -> None:
    found = extractor.extract(
        "订单ｌｍ２６１１０６２５，运单SF1265742679155，电话 138-1234-5678，邮箱 Zhang.Wei@Example.com", NOW
    )
    assert [(e.type, e.value) for e in found] == [
        ("order_number", "LM26110625"),
        ("tracking_number", "SF1265742679155"),
        ("phone", "+8613812345678"),
        ("email", "zhang.wei@example.com"),
    ]
    assert found[0].text == "ｌｍ２６１１０６２５", "the span reports what the customer typed"
    assert found[1].attrs["carrier"] == "SF"
    assert values(extractor, "78387132072190 到哪了", "tracking_number") == ["78387132072190"]
    assert values(extractor, "售后单AS261117003", "after_sale_id") == ["AS261117003"]
    assert values(extractor, "LM26130625", "order_number") == [], "month 13 is not an order number"


def test_redacted_personal_data_still_counts_as_given(extractor: EntityExtractor) -> None:
    found = extractor.extract("电话改成 [PHONE_1:5678]，邮箱 [EMAIL_2]", NOW)
    assert [(e.type, e.value, e.attrs.get("last4")) for e in found] == [
        ("phone", "[PHONE_1:5678]", "5678"),
        ("email", "[EMAIL_2]", None),
    ]


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("付了¥299", "299.00", "CNY"),
        ("三千五百块的手机", "3500.00", "CNY"),
        ("退了我两百块", "200.00", "CNY"),
        ("I paid ¥1,299", "1299.00", "CNY"),
        ("it cost me $120", "120.00", "USD"),
        ("便宜了100", "100.00", "CNY"),
    ],
)
def test_amounts_with_arabic_or_chinese_numerals(
    extractor: EntityExtractor, text: str, amount: str, currency: str
) -> None:
    found = [e for e in extractor.extract(text, NOW) if e.type == "amount"]
    assert [(e.value, e.attrs["currency"]) for e in found] == [(amount, currency)]


def test_quantities_but_not_articles(extractor: EntityExtractor) -> None:
    assert values(extractor, "我要买两件", "quantity") == ["2"]
    assert values(extractor, "I want 2 pairs", "quantity") == ["2"]
    assert values(extractor, "I bought 2 Orca M3 mice", "quantity") == ["2"]
    assert values(extractor, "我有一个问题", "quantity") == []
    assert values(extractor, "Wi-Fi 6 路由器", "quantity") == []


def test_products_colours_and_sizes_from_the_catalogue(extractor: EntityExtractor) -> None:
    found = extractor.extract("Vela X7 Pro 远峰蓝 有XL码吗", NOW)
    assert [(e.type, e.value) for e in found] == [
        ("product", "LM-PH-003"),
        ("color", "远峰蓝/Sierra Blue"),
        ("size", "XL"),
    ]
    assert values(extractor, "我想买空气炸锅", "product") == ["LM-KT-001"]
    assert values(extractor, "my kumo air fryr broke", "product") == ["LM-KT-001"], "fuzzy: a typo"
    assert values(extractor, "有没有黑色的", "color") == ["black"]
    assert values(extractor, "13寸的内胆包", "size") == ["13英寸/13-inch"]
    assert values(extractor, "耳机坏了", "product") == [], "a category word names no product"
    ambiguous = next(e for e in extractor.extract("Vela X7 电池多大", NOW) if e.type == "product")
    assert ambiguous.value == "LM-PH-001" and ambiguous.attrs["candidates"] == ["LM-PH-001", "LM-PH-002", "LM-PH-003"]


def test_addresses_are_cut_out_of_the_sentence(extractor: EntityExtractor) -> None:
    assert values(extractor, "地址改成上海市浦东新区世纪大道88号502室，谢谢", "address") == [
        "上海市浦东新区世纪大道88号502室"
    ]
    assert values(extractor, "ship to Room 502, 1288 Huateng Road, Qingpu District, Shanghai", "address") == [
        "Room 502, 1288 Huateng Road, Qingpu District, Shanghai"
    ]
    assert values(extractor, "发到新疆要几天", "address") == []


RECOMMENDATION = [
    Message("user", "有什么推荐的手机吗"),
    Message("assistant", "推荐 Vela X7 Pro（钛金色）、Aster Note 20（薄荷绿、暮光紫）和 Vela Flip"),
]


def test_the_second_one_and_the_blue_one_resolve_against_the_conversation(extractor: EntityExtractor) -> None:
    second = [e for e in extractor.extract("第二个多少钱", NOW, RECOMMENDATION) if e.type == "product"]
    assert [(e.value, e.source) for e in second] == [("LM-PH-004", "context")]
    assert values(extractor, "the last one", "product", RECOMMENDATION) == ["LM-PH-007"]
    assert values(extractor, "那个紫色的还有吗", "product", RECOMMENDATION) == ["LM-PH-004"]
    orders = [Message("user", "LM26110625 到哪了"), Message("assistant", "您的订单已签收。")]
    assert values(extractor, "这个订单能退吗", "order_number", orders) == ["LM26110625"]
    assert values(extractor, "第二个多少钱", "product") == [], "nothing to refer to without a conversation"


def test_entity_f1_on_the_annotated_demo_set_meets_the_target() -> None:
    report = run_entity_eval(DEMO_SHOP / "eval" / "entities_test.jsonl", EntityExtractor.for_shop(DEMO_SHOP))
    assert report.lines >= 200
    assert report.f1 >= 0.9, report.mistakes


def test_without_a_shop_only_generic_entities_are_found(tmp_path: Path) -> None:
    extractor = EntityExtractor.for_shop(None)
    found = extractor.extract("LM26110625 昨天买的，电话13812345678", NOW)
    assert [e.type for e in found] == ["date", "phone"]


def test_reference_numbers_are_left_out_of_what_a_message_is_about(extractor: EntityExtractor) -> None:
    """The shop's order, after-sale and tracking numbers say which order, not what the customer wants."""
    ids = extractor.identifiers
    assert ids.without_references("收到的商品有破损，怎么办？ 订单号 LM26110625") == "收到的商品有破损，怎么办？"
    # the label that names the number goes with it, and brackets around both
    assert ids.without_references("My parcel arrived damaged (order LM26110625)") == "My parcel arrived damaged"
    assert ids.without_references("订单号：LM26110625，我要退货") == "，我要退货"
    assert ids.without_references("Order no. LM26110625 was never delivered") == "was never delivered"
    assert ids.without_references("【订单LM26110625】怎么还没发货") == "怎么还没发货"
    # a bare noun outside brackets says what the message is about and stays
    assert ids.without_references("where is my order LM26110625") == "where is my order"
    assert ids.without_references("我的订单LM26110625到哪了") == "我的订单 到哪了"
    assert ids.without_references("where is SF1265742679155 now?") == "where is now?"
    assert ids.without_references("售后单AS260101001进度") == "售后单 进度"
    # nothing else changes: phone numbers, product models, a message without numbers
    assert ids.without_references("电话 13812345678，XM4 耳机") == "电话 13812345678，XM4 耳机"
    assert ids.without_references("退货政策是什么？") == "退货政策是什么？"
    # a message that is only a number (a slot answer) is still read as itself
    assert ids.without_references("LM26110625") == "LM26110625"


def test_earlier_messages_are_read_once_and_a_new_day_reads_dates_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = EntityExtractor.for_shop(DEMO_SHOP)
    read: list[str] = []
    identifiers = extractor.identifiers.extract
    monkeypatch.setattr(extractor.identifiers, "extract", lambda text: read.append(text) or identifiers(text))
    orders = [Message("user", "LM26110625 到哪了"), Message("assistant", "您的订单已签收。")]
    assert values(extractor, "这个订单能退吗", "order_number", orders) == ["LM26110625"]
    assert values(extractor, "这个订单昨天签收的能退吗", "order_number", orders) == ["LM26110625"]
    assert sorted(read) == sorted(
        ["这个订单能退吗", "LM26110625 到哪了", "您的订单已签收。", "这个订单昨天签收的能退吗"]
    )
    tomorrow = NOW.replace(day=NOW.day + 1)
    assert [e.value for e in extractor.extract("这个订单昨天签收的能退吗", tomorrow) if e.type == "date"] == [
        "2026-11-20"
    ]
    assert values(extractor, "这个订单昨天签收的能退吗", "date") == ["2026-11-19"]
