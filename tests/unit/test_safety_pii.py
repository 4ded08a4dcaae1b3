"""PII detection, validation and per-session placeholders."""

from __future__ import annotations

import pytest

from kefu.safety.crypto import TextCipher
from kefu.safety.pii import PiiDetector, PiiVault, Redactor, luhn_valid, masked, valid_resident_id

ID_OK = "11010519491231002X"
CARD_OK = "6222021234567890128"  # Luhn-valid


def _redactor() -> tuple[Redactor, PiiVault]:
    return Redactor(PiiDetector()), PiiVault(secret=b"k" * 32)


def test_validators_accept_real_numbers_and_reject_near_misses() -> None:
    assert valid_resident_id(ID_OK)
    assert not valid_resident_id("110105194912310021")  # wrong check character
    assert not valid_resident_id("110105194902300023")  # 30 February
    assert luhn_valid(CARD_OK)
    assert not luhn_valid(CARD_OK[:-1] + "9")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("我的手机是13812345678", "PHONE"),
        ("call me on +86 138 1234 5678 please", "PHONE"),
        ("座机 010-62345678", "LANDLINE"),
        (f"身份证号{ID_OK}", "ID"),
        (f"卡号 {CARD_OK}", "CARD"),
        ("邮箱 zhang.san@example.com 谢谢", "EMAIL"),
        ("护照号 E12345678", "PASSPORT"),
        ("寄到上海市浦东新区张杨路1588号502室", "ADDRESS"),
        ("ship to 221 Baker Street, Apt 4", "ADDRESS"),
    ],
)
def test_each_kind_is_replaced_by_a_placeholder(text: str, kind: str) -> None:
    redactor, vault = _redactor()
    redaction = redactor.redact(text, vault)
    assert kind in redaction.kinds
    assert f"[{kind}_1" in redaction.text


def test_order_and_tracking_numbers_are_not_personal_data() -> None:
    redactor, vault = _redactor()
    text = "订单 LM26080037 的快递单号 360081146874 到哪了？满99元包邮吗"
    assert redactor.redact(text, vault).text == text


def test_placeholders_are_stable_within_a_session_and_keep_the_last_four_digits() -> None:
    redactor, vault = _redactor()
    first = redactor.redact("电话 13812345678", vault).text
    again = redactor.redact("还是 138 1234 5678，另一个 13900001111", vault).text
    assert first == "电话 [PHONE_1:5678]"
    assert again == "还是 [PHONE_1:5678]，另一个 [PHONE_2:1111]"
    assert vault.original("[PHONE_1:5678]") == "13812345678"


def test_vault_survives_storage_without_keeping_values_in_clear() -> None:
    cipher = TextCipher(TextCipher.new_key())
    redactor = Redactor(PiiDetector(), cipher)
    vault = PiiVault(secret=b"s" * 32)
    redactor.redact("13812345678", vault)
    stored = vault.dump()
    assert "13812345678" not in repr(stored)
    reloaded = PiiVault.load(b"s" * 32, stored)
    assert redactor.redact("13812345678", reloaded).text == "[PHONE_1:5678]"
    assert reloaded.original("[PHONE_1:5678]", cipher) == "13812345678"


def test_model_placeholders_become_masked_values_for_the_customer() -> None:
    redactor, vault = _redactor()
    redactor.redact("13812345678", vault)
    shown = redactor.unmask_for_customer("已为尾号 [PHONE_1:5678] 的手机登记", vault)
    assert shown == "已为尾号 138****5678 的手机登记"


def test_operator_patterns_are_redacted_too() -> None:
    redactor = Redactor(PiiDetector({"member": r"VIP\d{8}"}))
    assert redactor.redact("会员号 VIP12345678", PiiVault(secret=b"x")).text == "会员号 [MEMBER_1]"


def test_cipher_round_trips_and_names_a_wrong_key() -> None:
    cipher = TextCipher(TextCipher.new_key())
    token = cipher.encrypt("13812345678")
    assert "13812345678" not in token and cipher.decrypt(token) == "13812345678"
    with pytest.raises(Exception, match="another key"):
        TextCipher(TextCipher.new_key()).decrypt(token)


def test_a_masked_address_stays_recognisable_but_hides_the_door() -> None:
    assert masked("ADDRESS", "浙江省杭州市西湖区文三路100号") == "浙江省杭州市西湖区文三路***号"
    assert masked("ADDRESS", "西溪花园3幢2单元501室") == "西溪花园***幢***单元***室"
    assert masked("ADDRESS", "Room 5, 88 Huaihai Road") == "Room ***, *** Huaihai Road"
    assert masked("PHONE", "13812345678") == "138****5678"
