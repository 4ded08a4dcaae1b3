"""Build a public zh + en intent set from Home Assistant's intent templates, for `kefu eval intents --train/--test`.

No standard intent benchmark (CLINC150, BANKING77, …) can be downloaded on kefu's machines; Home Assistant's
sentence templates (Apache-2.0) are published on PyPI. This expands them with `hassil` in a separate venv and
splits by template, so no test sentence shares a template with a training sentence:

    python3 -m venv /tmp/havenv && /tmp/havenv/bin/pip install hassil home-assistant-intents
    PYTHONHASHSEED=0 /tmp/havenv/bin/python bench/public_intents_ha.py build/ha-intents   # hassil samples in set order
    kefu eval intents --train build/ha-intents/train.csv --test build/ha-intents/test.csv

Entity names, areas and floors are a Home Assistant user's own; a few plausible ones fill them here.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import home_assistant_intents  # type: ignore[import-not-found]
from hassil.intents import Intents, TextSlotList  # type: ignore[import-not-found]
from hassil.sample import sample_expression  # type: ignore[import-not-found]

LANGUAGES = ("en", "zh-CN")
PER_TEMPLATE = 3
TEST_SHARE = 5
"""One template in five (at least one per intent) goes to the test split."""
FILLERS = {
    "en": {
        "name": ["kitchen light", "ceiling fan", "garage door", "tv", "heater", "front door lock"],
        "area": ["kitchen", "bedroom", "living room", "office"],
        "floor": ["first floor", "upstairs"],
    },
    "zh-CN": {
        "name": ["客厅灯", "吊扇", "车库门", "电视", "暖气", "大门锁"],
        "area": ["厨房", "卧室", "客厅", "书房"],
        "floor": ["一楼", "楼上"],
    },
}


def main(out: Path) -> None:
    rng = random.Random(7)
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    data_dir = Path(home_assistant_intents.__file__).parent / "data"
    for lang in LANGUAGES:
        intents = Intents.from_dict(json.loads((data_dir / f"{lang}.json").read_text(encoding="utf-8")))
        lists = {**intents.slot_lists, **{k: TextSlotList.from_strings(v) for k, v in FILLERS[lang].items()}}
        for name, intent in intents.intents.items():
            templates = []
            for data in intent.data:
                rules = {**intents.expansion_rules, **(data.expansion_rules or {})}
                for sentence in data.sentences:
                    try:
                        sampled = sample_expression(sentence.expression, lists, rules, language=lang)
                        texts = sorted({t for _, t in zip(range(400), sampled, strict=False)})
                    except Exception:  # a template that needs a list only Home Assistant fills at run time
                        continue
                    texts = [t for t in texts if "{" not in t and "<" not in t]
                    if texts:
                        templates.append(rng.sample(texts, min(PER_TEMPLATE, len(texts))))
            if len(templates) < 2:
                continue
            rng.shuffle(templates)
            cut = max(1, len(templates) // TEST_SHARE)
            for i, texts in enumerate(templates):
                (test if i < cut else train).extend((t, name) for t in texts)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        with (out / f"{split}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    print(f"{len(train)} training rows, {len(test)} test rows, {len({label for _, label in train})} labels → {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/ha-intents"))
