"""Which language a text is in: Chinese by script, everything else by langid.

One rule for the cleaning step (which labels every document) and for the packer's workers (which
label the rare document that reached them unlabelled, for per-language tokenizer fertility).
Standard library only at import: the packer's spawned workers must not pay for datatrove; langid
loads on first use (~3 s).
"""
from __future__ import annotations

import re
from typing import Any

# Characters shingled/n-grammed one by one (dedup, decontamination): Han ideographs (incl.
# extension A and compatibility), kana, hangul.
CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile("[\u3040-\u30ff\uac00-\ud7af]")
LETTER = re.compile(r"[^\W\d_]")
SAMPLE_CHARS = 4000
"""Characters from the start of a text that decide (speed on long documents)."""

_IDENTIFIERS: dict[bool, Any] = {}


def is_chinese(sample: str) -> bool:
    """Han ideographs are over 30% of the letters and there is (almost) no kana or hangul, which
    would make it Japanese or Korean. langid is unreliable on classical Chinese; the script is not."""
    letters = len(LETTER.findall(sample))
    if not letters:
        return False
    han = len(_HAN.findall(sample))
    return han / letters > 0.3 and len(_KANA_HANGUL.findall(sample)) < 0.05 * han


def langid_identifier(norm_probs: bool) -> Any:
    """langid's identifier, loaded once per process; norm_probs=True gives probabilities (the
    cleaning step's confidence threshold), False only the ranking (cheaper)."""
    if norm_probs not in _IDENTIFIERS:
        from langid.langid import LanguageIdentifier, model

        _IDENTIFIERS[norm_probs] = LanguageIdentifier.from_modelstring(model, norm_probs=norm_probs)
    return _IDENTIFIERS[norm_probs]


def guess_language(text: str, sample_chars: int = SAMPLE_CHARS) -> str:
    """ISO 639-1 code of a prose text: 'zh' by script, else langid's best guess."""
    sample = text[:sample_chars]
    if is_chinese(sample):
        return "zh"
    return langid_identifier(norm_probs=False).classify(sample)[0]
