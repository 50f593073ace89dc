"""Shared fixtures for the data stage tests: tiny corpora written to tmp_path, the shared data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("FULLCHAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

ENGLISH = [
    "The committee met on Tuesday to discuss the budget for the new library. Members agreed that the "
    "reading rooms should stay open later in the evening, and that the children's section needs more "
    "books about science and history. The chair asked for a written proposal before the next meeting.",
    "Rivers carry sediment from the mountains to the sea. Over thousands of years this material builds "
    "deltas, where the water slows down and drops the sand and clay it has carried. Farmers have long "
    "valued these plains because the soil is rich and easy to work, although floods remain a danger.",
    "A good loaf of bread needs only flour, water, salt and yeast, but the baker's patience matters as "
    "much as the ingredients. The dough must rest until it has doubled in size, and then it is shaped, "
    "left to rise again, and baked in a hot oven until the crust is deep brown and sounds hollow.",
    "The old lighthouse on the northern cape was built in the last century to guide fishing boats home "
    "through the fog. Today it is a small museum where visitors can climb the spiral staircase, look at "
    "the great lens, and read the keepers' logbooks that describe storms, shipwrecks and quiet nights.",
]
CHINESE = [
    "春天来了，山坡上的桃花开得正好。孩子们放学以后常常跑到河边去放风筝，老人们坐在树下喝茶聊天，"
    "说起当年修水渠的往事。村里新建的图书室也开放了，书架上摆满了科学、历史和文学方面的书籍，"
    "每到周末，总有不少人来这里读书学习。",
    "这座古城已经有一千多年的历史。城墙用青砖砌成，四面各有一座城门。城里的街道不宽，"
    "两旁是卖点心、茶叶和布匹的老店铺。每年秋天，城里都会举办灯会，游客从各地赶来观赏，"
    "热闹非凡，连小巷里都挤满了人。",
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set FULLCHAIN_SHARED_DATA)")
    return SHARED_DATA


_WORDS = ("river mountain village teacher garden winter summer market station harbour bridge "
          "library window forest meadow lantern orchard painter sailor doctor farmer engine "
          "letter morning evening kitchen quiet bright heavy gentle ancient narrow golden "
          "walked carried watched opened painted planted built found crossed followed").split()
_STOP = "the and of to in that with for was on".split()


def prose(seed: int, sentences: int = 30) -> str:
    """Deterministic English-like text that passes the Gopher rules and differs per seed."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = []
        for _ in range(rng.randint(8, 14)):
            words.append(rng.choice(_STOP) if rng.random() < 0.35 else rng.choice(_WORDS))
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)
