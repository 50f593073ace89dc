"""Cleaning steps (datatrove PipelineSteps): normalise, scrub PII, identify language, filter quality.

Every step counts per source in datatrove stats, under keys the data card reads:
`in/<source>`, `out/<source>`, `dropped/<source>/<reason>`, `chars_in/<source>`, `chars_out/<source>`
for filters, `pii/<source>/<kind>` for replacements, `lang/<source>/<language>` for languages.
The quality step uses datatrove's own Gopher filters, one instance per language (English words
from spaCy's blank model, Chinese words from jieba, which the filter uses only with language="zh").
"""
from __future__ import annotations

import re
import unicodedata
from abc import abstractmethod
from typing import Callable, Optional

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from fullchain.data.language import CJK_CLASS, LETTER, is_chinese, langid_identifier


class TallyingStep(PipelineStep):
    """A step that drops documents and records, per source, documents/characters in and out and
    the drop reasons (the stats the data card reads)."""

    def tally(self, data: DocumentsPipeline,
              decide: Callable[[int, Document], Optional[str]]) -> DocumentsPipeline:
        """Yield the documents `decide(index, doc)` keeps (None); count the others by reason."""
        for index, doc in enumerate(data):
            source = doc.metadata.get("source", "?")
            self.stat_update(f"in/{source}")
            self.stat_update(f"chars_in/{source}", value=len(doc.text))
            reason = decide(index, doc)
            if reason is not None:
                self.stat_update(f"dropped/{source}/{reason}")
                self.stat_update(f"chars_dropped/{source}", value=len(doc.text))
                continue
            self.stat_update(f"out/{source}")
            self.stat_update(f"chars_out/{source}", value=len(doc.text))
            yield doc


class SourceFilter(TallyingStep):
    """A filter deciding document by document.

    Subclasses implement `check(doc) -> None` (keep) or a short reason string (drop); they may
    modify `doc.text` in place (then `chars_out` says by how much)."""

    type = "🔻 - FILTER"

    @abstractmethod
    def check(self, doc: Document) -> Optional[str]:
        """None to keep `doc`, else the reason it is dropped."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        def decide(_index: int, doc: Document) -> Optional[str]:
            with self.track_time():
                return self.check(doc)

        yield from self.tally(data, decide)


class Normalize(SourceFilter):
    """Unicode normal form, control/invisible characters, line ends; drops what becomes empty."""

    name = "normalize"
    # C0/C1 controls except \t \n, plus zero-width and BOM-like format characters
    _CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff\ufff9-\ufffb]")
    _TRAILING = re.compile(r"[ \t\u3000]+(?=\n)|[ \t\u3000]+$")

    def __init__(self, unicode_form: str = "NFC", remove_control_chars: bool = True,
                 strip_trailing_whitespace: bool = True):
        super().__init__()
        self.unicode_form = unicode_form
        self.remove_control_chars = remove_control_chars
        self.strip_trailing_whitespace = strip_trailing_whitespace

    def normalize(self, text: str) -> str:
        if self.strip_trailing_whitespace:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        if self.remove_control_chars:
            text = self._CONTROL.sub("", text)
        if self.strip_trailing_whitespace:
            text = self._TRAILING.sub("", text).strip("\n")
        return text

    def check(self, doc: Document) -> Optional[str]:
        doc.text = self.normalize(doc.text)
        return None if doc.text.strip() else "empty_after_normalize"


class PiiScrubber(PipelineStep):
    """Replace e-mail addresses, phone numbers and public IP addresses; count each per source."""

    type = "✂️ - FORMAT"
    name = "pii"
    EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
    IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
    IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f:])")
    # +CC groups / (NNN) NNN-NNNN / NNN-NNN-NNNN / Chinese mobile 1[3-9]x: at least 10 digits in
    # a phone-shaped layout, so years, prices and version numbers are left alone.
    PHONE = re.compile(
        r"(?<![\w+])(?:"
        r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,3}"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
        r"|\d{3}[.-]\d{3}[.-]\d{4}"
        r"|1[3-9]\d[ -]?\d{4}[ -]?\d{4}"
        r")(?![\w])"
    )

    def __init__(self, emails: bool = True, phone_numbers: bool = True, ip_addresses: bool = True,
                 email_replacement: str = "<EMAIL>", phone_replacement: str = "<PHONE>",
                 ip_replacement: str = "<IP_ADDRESS>"):
        super().__init__()
        self.rules = []
        if emails:
            self.rules.append(("email", self.EMAIL, email_replacement))
        if ip_addresses:  # before phones: 10.0.0.1-like digit runs must not be read as phones
            self.rules.append(("ip", self.IPV4, None))
            self.rules.append(("ip", self.IPV6, ip_replacement))
        if phone_numbers:
            self.rules.append(("phone", self.PHONE, phone_replacement))
        self.ip_replacement = ip_replacement

    @staticmethod
    def _public_ipv4(address: str) -> bool:
        octets = [int(part) for part in address.split(".")]
        private = (octets[0] in (0, 10, 127) or (octets[0] == 192 and octets[1] == 168)
                   or (octets[0] == 172 and 16 <= octets[1] <= 31) or octets[0] >= 224)
        return not private

    def scrub(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with PII replaced, and how many of each kind were replaced."""
        counts: dict[str, int] = {}

        def replace(kind: str, replacement: Optional[str]):
            def substitute(match: re.Match) -> str:
                if replacement is None and not self._public_ipv4(match.group(0)):
                    return match.group(0)  # private / loopback addresses are not personal data
                counts[kind] = counts.get(kind, 0) + 1
                return replacement if replacement is not None else self.ip_replacement
            return substitute

        for kind, pattern, replacement in self.rules:
            text = pattern.sub(replace(kind, replacement), text)
        return text, counts

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.text, counts = self.scrub(doc.text)
            source = doc.metadata.get("source", "?")
            for kind, n in counts.items():
                self.stat_update(f"pii/{source}/{kind}", value=n)
            yield doc


_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |return\b|if .*:\s*$|elif |else:|for .*:\s*$|while .*:\s*$|"
    r"try:|except\b|finally:|with .*:\s*$|@\w|#include|#define|public |private |static |const |let |var |"
    r"function\b|package |func |fn |\}|\{|//|/\*|\*|#!|@)"
    r"|[;{}]\s*$|^\s*[\w.\[\]]+\s*[+\-*/]?=\s*\S|^\s{4,}\S|\)\s*:\s*$"
)


def code_line_fraction(text: str, max_lines: int = 400) -> float:
    """Fraction of non-blank lines that look like source code (keywords, braces, assignments)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    lines = lines[:: max(1, len(lines) // max_lines)]  # spread over the document: docstrings come first
    return sum(1 for line in lines if _CODE_LINE.search(line)) / len(lines)


class LanguageFilter(SourceFilter):
    """Tag `metadata["language"]` (langid + CJK and code heuristics) and drop languages not kept."""

    name = "language"

    def __init__(self, keep: list[str], min_confidence: float = 0.5, code_line_fraction: float = 0.5,
                 sample_chars: int = 4000):
        super().__init__()
        self.keep = list(keep)
        self.min_confidence = min_confidence
        self.code_threshold = code_line_fraction
        self.sample_chars = sample_chars
        self._identifier = None

    @property
    def identifier(self):
        if self._identifier is None:
            from fullchain.data.fastfilters import freeze_heap

            self._identifier = langid_identifier(norm_probs=True)
            freeze_heap()  # the model's arrays and dicts live as long as the worker
        return self._identifier

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # langid's one matrix product per document: BLAS threads in each of the (one per core)
        # workers only oversubscribe the cores (~10x slower); one thread gives the same numbers
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield from super().run(data, rank, world_size)

    def identify(self, text: str) -> tuple[str, float]:
        fraction = code_line_fraction(text)
        sample = text[: self.sample_chars]
        if fraction >= self.code_threshold:
            return "code", fraction
        if is_chinese(sample):
            return "zh", 1.0
        language, probability = self.identifier.classify(sample)
        if probability < self.min_confidence:
            return "unknown", float(probability)
        return language, float(probability)

    def check(self, doc: Document) -> Optional[str]:
        language, score = self.identify(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = round(score, 4)
        self.stat_update(f"lang/{doc.metadata.get('source', '?')}/{language}")
        return None if language in self.keep else f"language_{language}"


_EDGE_PUNCT = "\"'“”‘’«»()[]{}<>.,;:!?…—–-*_`~|/\\"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _word_tokenizer(language: str):
    """A datatrove WordTokenizer: whitespace words with edge punctuation stripped (Gopher's own
    definition of a word, and ~10x faster than spaCy's blank model, which also counts every comma
    as a non-alphabetic "word"); Chinese through jieba, whitespace tokens removed."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class FastWordTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            if self.language == "zh":
                import jieba

                return [token for token in jieba.lcut(text) if token.strip()]
            words = []
            for token in text.split():
                stripped = token.strip(_EDGE_PUNCT)
                words.append(stripped or token)
            return words

        def sent_tokenize(self, text: str) -> list[str]:
            return [part for part in _SENTENCE_END.split(text) if part.strip()]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            spans, start = [], 0
            for part in _SENTENCE_END.split(text):
                begin = text.index(part, start)
                spans.append((begin, begin + len(part)))
                start = begin + len(part)
            return spans

    return FastWordTokenizer(language)


class QualityFilter(SourceFilter):
    """Length, Gopher quality (per language), Gopher repetition (prose) and code heuristics."""

    name = "quality"

    def __init__(self, min_chars: int, max_chars: int, gopher: dict[str, dict], repetition: dict,
                 code: dict):
        super().__init__()
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.gopher_params = gopher  # language -> GopherConfig as a dict
        self.repetition_params = repetition
        self.code = code
        self._filters: dict[str, list] = {}

    def _language_filters(self, language: str) -> list:
        """datatrove filter objects for a language (built lazily inside the worker process)."""
        if language not in self._filters:
            from fullchain.data.fastfilters import (
                FastGopherQualityFilter,
                FastGopherRepetitionFilter,
                freeze_heap,
            )

            key = "zh" if language == "zh" else "en"
            params = self.gopher_params[key]
            word_language = _word_tokenizer("zh" if language == "zh" else "en")
            filters = [FastGopherQualityFilter(
                min_doc_words=params["min_doc_words"],
                max_doc_words=params["max_doc_words"],
                min_avg_word_length=params["min_avg_word_length"],
                max_avg_word_length=params["max_avg_word_length"],
                max_symbol_word_ratio=params["max_symbol_word_ratio"],
                max_bullet_lines_ratio=params["max_bullet_lines_ratio"],
                max_ellipsis_lines_ratio=params["max_ellipsis_lines_ratio"],
                max_non_alpha_words_ratio=params["min_alpha_words_fraction"],
                min_stop_words=params["min_stop_words"],
                language=word_language,
            )]
            if self.repetition_params.get("enabled", True):
                filters.append(FastGopherRepetitionFilter(
                    dup_line_frac=self.repetition_params["dup_line_frac"],
                    dup_para_frac=self.repetition_params["dup_para_frac"],
                    dup_line_char_frac=self.repetition_params["dup_line_char_frac"],
                    dup_para_char_frac=self.repetition_params["dup_para_char_frac"],
                    language=word_language,
                ))
            if language == "zh":
                import jieba

                jieba.initialize()  # load the dictionary now, so that freeze_heap covers it
            freeze_heap()
            self._filters[language] = filters
        return self._filters[language]

    def check_code(self, text: str) -> Optional[str]:
        lines = text.splitlines() or [text]
        longest = max(len(line) for line in lines)
        if longest > self.code["max_line_length"]:
            return "code_long_line"
        if len(text) / len(lines) > self.code["max_mean_line_length"]:
            return "code_long_mean_line"
        if len(LETTER.findall(text)) / max(1, len(text)) < self.code["min_alpha_fraction"]:
            return "code_low_alpha"
        return None

    def check(self, doc: Document) -> Optional[str]:
        if len(doc.text) < self.min_chars:
            return "too_short"
        if len(doc.text) > self.max_chars:
            return "too_long"
        language = doc.metadata.get("language", "en")
        if language == "code":
            return self.check_code(doc.text)
        for datatrove_filter in self._language_filters(language):
            result = datatrove_filter.filter(doc)
            if result is not True:
                reason = result[1] if isinstance(result, tuple) else type(datatrove_filter).__name__
                return reason if reason.startswith("gopher") else f"gopher_rep_{reason}"
        return None


class Tally(PipelineStep):
    """Count documents, characters, UTF-8 bytes, languages and a log2 length histogram per source."""

    type = "📊 - STATS"

    def __init__(self, label: str):
        self.label = label
        self.name = self.step_name(label)  # before super().__init__(): the stats are named after it
        super().__init__()

    @staticmethod
    def step_name(label: str) -> str:
        """The step's name for a label ("raw", "final"): the data card finds its stats by it."""
        return f"tally {label}"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            source = doc.metadata.get("source", "?")
            chars = len(doc.text)
            self.stat_update(f"docs/{source}")
            self.stat_update(f"chars/{source}", value=chars)
            self.stat_update(f"bytes/{source}", value=len(doc.text.encode("utf-8")))
            self.stat_update(f"lenbin/{source}/{max(0, chars.bit_length() - 1)}")
            if "language" in doc.metadata:
                self.stat_update(f"lang/{source}/{doc.metadata['language']}")
                self.stat_update(f"langchars/{source}/{doc.metadata['language']}", value=chars)
            yield doc


# CJK_CLASS is re-exported: dedup and decontamination shingle CJK text by character.
__all__ = ["CJK_CLASS", "LanguageFilter", "Normalize", "PiiScrubber", "QualityFilter", "SourceFilter",
           "Tally", "TallyingStep", "code_line_fraction"]
