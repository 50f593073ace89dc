"""The fast Gopher filters and simplify_text give exactly the datatrove originals' results."""
from __future__ import annotations

import json
import random

import pytest
from data_testing import CHINESE, ENGLISH, SHARED_DATA
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.text import DEF_TEXT_NORM_CONFIG, TextNormConfig
from datatrove.utils.text import simplify_text as datatrove_simplify
from fullchain.data.clean import _word_tokenizer
from fullchain.data.fastfilters import FastGopherQualityFilter, FastGopherRepetitionFilter, simplify_text


def edge_documents() -> list[str]:
    """Documents that trip each Gopher rule, or sit on its edge, plus odd whitespace/punctuation."""
    rng = random.Random(7)
    words = " ".join(ENGLISH).split()
    docs = list(ENGLISH) + list(CHINESE) + ["", " ", "...", "# # #", "- a\n- b\n- c", "x...\ny…\nz"]
    docs.append("\n\n".join([ENGLISH[0]] * 3 + [ENGLISH[1]]))  # duplicated paragraphs
    docs.append("\n".join(["same line here"] * 5 + ENGLISH))  # duplicated lines
    docs.append(" ".join(["the cat sat"] * 40))  # top 2/3-grams
    docs.append(ENGLISH[2] + " " + ENGLISH[2][:180])  # duplicated 5..10-grams
    docs.append(" ".join(["ab c", "a bc"] * 30))  # "".join n-grams collide across word boundaries
    docs.append("!!! ,,, ;; " * 30 + ENGLISH[3])  # symbol-only words
    docs.append("٣٤٥ ² ½ Ⅷ " * 20 + ENGLISH[0])  # numeric characters that are not alphabetic
    for _ in range(30):  # random mixes of repeated chunks
        chunks = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 6))]
        docs.append(("\n" if rng.random() < 0.5 else " ").join(rng.choices(chunks, k=rng.randint(3, 40))))
    return docs


def shared_documents(limit: int = 400) -> list[str]:
    docs = []
    c4 = SHARED_DATA / "llamafactory-pretrain-demo" / "c4_demo.jsonl"
    if c4.is_file():
        docs += [json.loads(line)["text"] for line in c4.read_text(encoding="utf-8").splitlines()[:limit]]
    zh = SHARED_DATA / "chinese-poetry" / "zh_classics.txt"
    if zh.is_file():
        parts = [p for p in zh.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        docs += ["\n\n".join(parts[i:i + 4]) for i in range(0, min(len(parts), 4 * limit // 2), 4)]
    return docs


@pytest.mark.parametrize("language", ["en", "zh"])
def test_fast_gopher_filters_match_datatrove(language):
    docs = edge_documents() + shared_documents()
    tokenizer = _word_tokenizer(language)
    settings = dict(min_doc_words=20, min_avg_word_length=None, max_avg_word_length=None,
                    min_stop_words=None) if language == "zh" else {}
    pairs = [
        (GopherQualityFilter(language=tokenizer, **settings), FastGopherQualityFilter(language=tokenizer, **settings)),
        (GopherRepetitionFilter(language=tokenizer), FastGopherRepetitionFilter(language=tokenizer)),
        # tight thresholds: every rule fires on some documents
        (GopherRepetitionFilter(language=tokenizer, top_n_grams=((2, 0.01), (3, 0.01)),
                                dup_n_grams=((5, 0.001), (6, 0.001))),
         FastGopherRepetitionFilter(language=tokenizer, top_n_grams=((2, 0.01), (3, 0.01)),
                                    dup_n_grams=((5, 0.001), (6, 0.001)))),
    ]
    reasons = set()
    for original, fast in pairs:
        for index, text in enumerate(docs):
            try:
                expected = original.filter(Document(text=text, id=str(index)))
            except ZeroDivisionError:  # no words: the original divides by zero, so must ours
                with pytest.raises(ZeroDivisionError):
                    fast.filter(Document(text=text, id=str(index)))
                continue
            assert fast.filter(Document(text=text, id=str(index))) == expected, (type(original).__name__, text[:200])
            reasons.add(expected if expected is True else expected[1])
    assert len(reasons) >= 6  # the comparison covered kept documents and several drop reasons


def test_simplify_text_matches_datatrove():
    texts = edge_documents() + shared_documents(100) + [
        "Café naïve résumé — Ångström 1,234.5 Monday", "e\u0301 a\u0300 \u0915\u093f", "ＡＢＣ１２３ 漢字 ﬁ",
    ]
    configs = [DEF_TEXT_NORM_CONFIG, TextNormConfig(norm_weekdays=True, norm_monthnames=True),
               TextNormConfig(lowercase=False, remove_punctuation=False, norm_numbers=False)]
    for config in configs:
        for text in texts:
            assert simplify_text(text, config) == datatrove_simplify(text, config)
