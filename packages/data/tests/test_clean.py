"""Cleaning steps: normalisation, PII, language id, each quality rule; English, Chinese and code."""
from __future__ import annotations

from dataclasses import asdict

import pytest
from data_testing import CHINESE, ENGLISH
from datatrove.data import Document
from fullchain.data.clean import LanguageFilter, Normalize, PiiScrubber, QualityFilter, Tally
from fullchain.data.config import QualityConfig


def doc(text, source="s", language=None):
    metadata = {"source": source}
    if language:
        metadata["language"] = language
    return Document(text=text, id="d", metadata=metadata)


def quality(**overrides):
    cfg = QualityConfig(**overrides)
    return QualityFilter(cfg.min_chars, cfg.max_chars, {"en": asdict(cfg.en), "zh": asdict(cfg.zh)},
                         asdict(cfg.repetition), asdict(cfg.code))


def test_normalize_unicode_controls_and_whitespace():
    step = Normalize()
    assert step.normalize("cafe\u0301 a\u200bb\x07  \r\nline\ufeff\n\n") == "café ab\nline"
    assert step.normalize("ＡＢ，中文") == "ＡＢ，中文"  # NFC keeps full-width CJK punctuation
    assert Normalize(unicode_form="NFKC").normalize("ＡＢ") == "AB"
    kept = list(step.run([doc("ok"), doc("\u200b \x07")]))
    assert [d.text for d in kept] == ["ok"]
    assert step.stats.stats["dropped/s/empty_after_normalize"].total == 1


def test_pii_scrubbed_and_counted():
    step = PiiScrubber()
    text = ("Write to jane.roe@example.org, call +1 415 555 2671 or 138 1234 5678. Server 203.0.113.9 "
            "talks to 192.168.1.20. In 2023 the price was 1,250.")
    (out,) = list(step.run([doc(text)]))
    assert "jane.roe" not in out.text and "<EMAIL>" in out.text
    assert out.text.count("<PHONE>") == 2 and "<IP_ADDRESS>" in out.text
    assert "192.168.1.20" in out.text and "2023" in out.text and "1,250" in out.text
    stats = step.stats.stats
    assert (stats["pii/s/email"].total, stats["pii/s/phone"].total, stats["pii/s/ip"].total) == (1, 2, 1)


def test_language_ids_english_chinese_code(tmp_path):
    step = LanguageFilter(keep=["en", "zh", "code"], code_line_fraction=0.4)
    code = "import os\n\n\ndef main(argv):\n    for name in argv:\n        print(os.path.join('a', name))\n    return 0\n"
    german = ("Der Ausschuss traf sich am Dienstag, um den Haushalt für die neue Bibliothek zu besprechen. "
              "Die Mitglieder waren sich einig, dass die Lesesäle abends länger geöffnet bleiben sollten.")
    docs = [doc(ENGLISH[0]), doc(CHINESE[0]), doc(code), doc(german)]
    kept = list(step.run(docs))
    assert [d.metadata["language"] for d in kept] == ["en", "zh", "code"]
    assert step.stats.stats["dropped/s/language_de"].total == 1


def test_each_quality_rule_drops_its_case():
    step = quality(min_chars=50)
    cases = {
        "too_short": doc("short text", language="en"),
        "gopher_short_doc": doc("word " * 20 + "the and of", language="en"),
        "gopher_too_many_hashes": doc(" ".join(["#tag the and word"] * 30), language="en"),
        "gopher_below_alpha_threshold": doc(" ".join(["12345 67890 13579 24680 the and"] * 20), language="en"),
        "gopher_enough_stop_words": doc(" ".join(["apple banana cherry melon grape"] * 20), language="en"),
        "gopher_rep_dup_line_frac": doc("\n".join([ENGLISH[0]] * 3 + [ENGLISH[1]]), language="en"),
        "code_long_line": doc("x = '" + "a" * 1200 + "'\n" * 3, language="code"),
    }
    for reason, case in cases.items():
        assert step.check(case) == reason, reason
    for i, text in enumerate(ENGLISH):  # two paragraphs: one is under Gopher's 50 words
        assert step.check(doc(text + "\n\n" + ENGLISH[(i + 1) % 4], language="en")) is None


def test_chinese_and_code_pass_their_own_rules():
    step = quality(min_chars=50)
    for text in CHINESE:
        assert step.check(doc(text, language="zh")) is None
    python = "\n".join(f"def function_{i}(value):\n    return value * {i} + offset\n" for i in range(20))
    assert step.check(doc(python, language="code")) is None


def test_real_corpora_keep_most_documents(shared_data):
    """Default thresholds are tuned on the shared corpora: most documents survive."""
    from fullchain.data.config import SourceConfig
    from fullchain.data.sources import plan_sources, read_all

    sources = [
        SourceConfig(name="shakespeare", path=str(shared_data / "tinyshakespeare/input.txt"),
                     txt_unit="paragraph", units_per_document=20, max_documents=120),
        SourceConfig(name="zh", path=str(shared_data / "chinese-poetry/zh_classics.txt"), txt_unit="paragraph",
                     units_per_document=4, max_documents=200),
        SourceConfig(name="c4", path=str(shared_data / "llamafactory-pretrain-demo/c4_demo.jsonl"),
                     max_documents=150),
    ]
    units, _ = plan_sources(sources, 1, "raise")
    language = LanguageFilter(keep=["en", "zh", "code"], code_line_fraction=0.4)
    step, count = quality(), Tally("x")
    list(count.run(step.run(language.run(read_all(units)))))
    for source, minimum in (("shakespeare", 0.85), ("zh", 0.75), ("c4", 0.75)):
        fraction = step.stats.stats[f"out/{source}"].total / step.stats.stats[f"in/{source}"].total
        assert fraction >= minimum, (source, fraction)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_counted_not_dropped_silently(text):
    from fullchain.data.sources import SourceReader

    reader = SourceReader([], on_error="raise")
    assert reader._document("s", text, "id", "file") is None
    assert reader.stats.stats["skipped/s/empty_text"].total == 1
