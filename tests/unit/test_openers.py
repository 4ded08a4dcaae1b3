"""Greetings in front of a question are read past; a greeting alone, or a word that merely starts like one, is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.errors import DataFileError
from kefu.understanding.openers import Openers


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("你好，请问退货政策是什么？", "退货政策是什么？"),
        ("请问多久发货", "多久发货"),
        ("亲～在吗？我的快递到哪了", "我的快递到哪了"),
        ("Hi, quick question: do you ship to Hong Kong?", "do you ship to Hong Kong?"),
        ("HELLO!!! where is my package", "where is my package"),
        ("history of my orders please", "history of my orders please"),  # "hi" must end at a word boundary
        ("hey", "hey"),
        ("你好，在吗", "你好，在吗"),  # nothing but greetings
        ("你好啊客服", "你好啊客服"),  # what follows is too short to stand alone
        ("你好，退货", "你好，退货"),
        ("退货政策是什么", "退货政策是什么"),
    ],
)
def test_what_follows_the_greeting_is_read(text: str, read: str) -> None:
    assert Openers.load().read_past(text) == read


def test_an_operators_file_is_checked_and_its_problem_named(tmp_path: Path) -> None:
    bad = tmp_path / "openers.yaml"
    bad.write_text("zh: [你好]\nfr: [bonjour]\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"openers\.yaml"):
        Openers.load(bad)
    good = tmp_path / "good.yaml"
    good.write_text("en: [bonjour]\n", encoding="utf-8")
    assert Openers.load(good).read_past("Bonjour, where is my parcel?") == "where is my parcel?"
