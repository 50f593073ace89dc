"""Configuration of the data stage (stdlib only, so a spec validates without the heavy deps).

One `DataConfig` per spec: which sources to read, how to clean, filter, deduplicate and
decontaminate them, how datatrove executes the work, and (through `tokenizer` / `pack`, owned by
`tokenize_config.py`) how the cleaned text becomes a Megatron indexed dataset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from fullchain.core.contracts import Stage
from fullchain.core.schema import BenchmarkConfig, check_benchmark_names
from fullchain.data.tokenize_config import PackConfig, TokenizerConfig

SOURCE_FORMATS = ("txt", "jsonl", "parquet", "hf_disk", "stdlib")
# A source name becomes a folder (cleaned/<name>/), a packed-file prefix and a data-card row: one
# rule, checked when the config is built, so a bad name fails before any cleaning starts.
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EXTENSION_FORMATS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".parquet": "parquet",
}


def infer_format(path: str) -> Optional[str]:
    """The source format implied by a path's extension, None when the extension says nothing."""
    lowered = path.lower()
    for extension in sorted(_EXTENSION_FORMATS, key=len, reverse=True):
        if lowered.endswith(extension):
            return _EXTENSION_FORMATS[extension]
    return None


@dataclass
class SourceConfig:
    """One raw corpus: a file, a glob, a directory, a saved `datasets` dataset or the stdlib."""

    name: str = "corpus"
    """Short identifier; names the cleaned-files folder and the rows of the data card."""
    path: str = field(default="", metadata={"hash": "content"})
    """File, glob or directory of input files (or a `save_to_disk` folder); unused for stdlib."""
    format: Optional[Literal["txt", "jsonl", "parquet", "hf_disk", "stdlib"]] = None
    """Input format; None infers it from the extension (a directory without one needs it set)."""
    text_field: str = "text"
    """Field holding the text in jsonl / parquet / hf_disk records."""
    id_field: Optional[str] = None
    """Field holding a record id; None makes ids from file and line (`name/file:line`)."""
    weight: float = 1.0
    """Blend weight of this source in the training mixture (relative to the other sources)."""
    txt_unit: Literal["file", "paragraph", "line"] = "file"
    """How a .txt splits into units: the whole file, blank-line separated paragraphs, or lines."""
    units_per_document: int = 1
    """Consecutive txt units joined into one document (tinyshakespeare: ~20 paragraphs a doc)."""
    max_documents: Optional[int] = None
    """Read at most this many documents (in file order; a capped source is read by one task)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SOURCE_NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must match {SOURCE_NAME.pattern} (letters, digits, "
                             "'.', '_', '-'; it names folders and packed files)")
        if self.format is None:
            if not self.path:
                raise ValueError(f"path: source {self.name!r} has no path (and format is not 'stdlib')")
            self.format = infer_format(self.path)  # a directory or odd extension stays None
        if self.format is not None and self.format not in SOURCE_FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {SOURCE_FORMATS}")
        if self.format != "stdlib" and not self.path:
            raise ValueError(f"path: source {self.name!r} needs a path for format {self.format!r}")
        if self.weight <= 0:
            raise ValueError(f"weight: source {self.name!r} has weight {self.weight}, must be > 0")
        if self.units_per_document < 1:
            raise ValueError(f"units_per_document: {self.units_per_document} must be >= 1")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents: {self.max_documents} must be >= 1 or null")

    def content_files(self, field_name: str):
        """The files whose contents the step id hashes for `path` (core's hashing asks): for a
        stdlib source, the selected stdlib files by relative name; None: hash `path` itself."""
        if field_name != "path" or self.format != "stdlib":
            return None
        from fullchain.data.stdlib_corpus import content_entries

        return content_entries(self.max_documents)


@dataclass
class NormalizeConfig:
    """Text normalisation applied to every document before anything else."""

    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normal form; NFKC also folds full-width CJK punctuation to ASCII (changes zh text)."""
    remove_control_chars: bool = True
    """Drop C0/C1 control and invisible format characters (zero-width, BOM), keep \\n and \\t."""
    strip_trailing_whitespace: bool = True
    """Strip spaces at line ends and normalise \\r\\n / \\r to \\n."""


@dataclass
class PiiConfig:
    """Personal data scrubbing; every replacement is counted per source in the data card."""

    emails: bool = True
    """Replace e-mail addresses with `email_replacement`."""
    phone_numbers: bool = True
    """Replace phone numbers (international / North-American / Chinese mobile forms)."""
    ip_addresses: bool = True
    """Replace public IPv4 and IPv6 addresses (private and loopback ranges are kept)."""
    email_replacement: str = "<EMAIL>"
    """Text that replaces an e-mail address."""
    phone_replacement: str = "<PHONE>"
    """Text that replaces a phone number."""
    ip_replacement: str = "<IP_ADDRESS>"
    """Text that replaces an IP address."""


@dataclass
class LanguageConfig:
    """Language identification (langid, model shipped in the package) plus a code heuristic."""

    keep: list[str] = field(default_factory=lambda: ["en", "zh", "code"])
    """Languages kept (ISO 639-1 codes from langid, plus 'code'); others are dropped."""
    min_confidence: float = 0.5
    """Below this langid probability a prose document is labelled 'unknown' (dropped unless kept)."""
    code_line_fraction: float = 0.4
    """A document is 'code' when at least this fraction of its non-blank lines look like code."""
    sample_chars: int = 4000
    """Characters from the start of a document given to the identifier (speed; long docs)."""


@dataclass
class GopherConfig:
    """Gopher quality heuristics (Rae et al. 2021) for one language; null disables a rule."""

    min_doc_words: Optional[int] = 50
    """Fewest words in a document."""
    max_doc_words: Optional[int] = 100000
    """Most words in a document."""
    min_avg_word_length: Optional[float] = 3
    """Shortest mean word length (characters)."""
    max_avg_word_length: Optional[float] = 10
    """Longest mean word length (characters)."""
    max_symbol_word_ratio: Optional[float] = 0.1
    """Most '#' and '...' symbols per word."""
    max_bullet_lines_ratio: Optional[float] = 0.9
    """Most lines starting with a bullet."""
    max_ellipsis_lines_ratio: Optional[float] = 0.3
    """Most lines ending with an ellipsis."""
    min_alpha_words_fraction: Optional[float] = 0.8
    """Fewest words containing an alphabetic character, as a fraction of all words."""
    min_stop_words: Optional[int] = 2
    """Fewest stop words ('the', 'be', 'to', ...); null for languages without a list."""


def _zh_gopher() -> GopherConfig:
    # jieba words are 1-2 characters and classical Chinese is terse: word-length rules and the
    # English stop-word rule would drop nearly all of it, so they are off; keep the size and symbol rules.
    return GopherConfig(
        min_doc_words=20,
        max_doc_words=200000,
        min_avg_word_length=None,
        max_avg_word_length=None,
        min_alpha_words_fraction=0.6,
        min_stop_words=None,
    )


@dataclass
class RepetitionConfig:
    """Gopher repetition rules (duplicate lines / paragraphs / n-grams inside one document)."""

    enabled: bool = True
    """Apply the repetition filter to prose (en, zh) documents."""
    dup_line_frac: Optional[float] = 0.3
    """Most fraction of lines that are duplicates of another line."""
    dup_para_frac: Optional[float] = 0.3
    """Most fraction of paragraphs that are duplicates."""
    dup_line_char_frac: Optional[float] = 0.2
    """Most fraction of characters in duplicated lines."""
    dup_para_char_frac: Optional[float] = 0.2
    """Most fraction of characters in duplicated paragraphs."""


@dataclass
class CodeFilterConfig:
    """Heuristics for documents labelled 'code' (the prose rules would drop all of them)."""

    max_line_length: int = 1000
    """Longest line (minified or generated files exceed it)."""
    max_mean_line_length: float = 100.0
    """Longest mean line length."""
    min_alpha_fraction: float = 0.25
    """Fewest alphabetic characters as a fraction of all characters (data blobs, base64)."""


@dataclass
class QualityConfig:
    """Document quality filters, applied in this order: length, language rules, repetition."""

    min_chars: int = 200
    """Shortest document in characters (after normalisation)."""
    max_chars: int = 2_000_000
    """Longest document in characters."""
    en: GopherConfig = field(default_factory=GopherConfig)
    """Gopher rules for English (and other Latin-script languages that are kept)."""
    zh: GopherConfig = field(default_factory=_zh_gopher)
    """Gopher rules for Chinese (jieba word splitting)."""
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    """Repetition rules for prose."""
    code: CodeFilterConfig = field(default_factory=CodeFilterConfig)
    """Rules for code."""

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise ValueError(f"min_chars: {self.min_chars} must be >= 0 and < max_chars={self.max_chars}")


@dataclass
class DedupConfig:
    """Exact (content hash) then near-duplicate (MinHash LSH) removal across all sources."""

    exact: bool = True
    """Remove documents whose normalised text is identical to an earlier one."""
    near: bool = True
    """Remove near-duplicates found by MinHash LSH (one document per cluster is kept)."""
    ngram_size: int = 5
    """Shingle size in words (CJK text: characters)."""
    num_buckets: int = 14
    """LSH bands; with 8 hashes each, pairs above ~0.72 Jaccard similarity are caught (~0.92 at 0.8)."""
    hashes_per_bucket: int = 8
    """MinHash values per band."""

    def __post_init__(self) -> None:
        if self.ngram_size < 1 or self.num_buckets < 1 or self.hashes_per_bucket < 1:
            raise ValueError("ngram_size: ngram_size, num_buckets and hashes_per_bucket must be >= 1")


@dataclass
class DecontaminationConfig:
    """Long n-gram overlap between training documents and evaluation items."""

    benchmarks: list[BenchmarkConfig] = field(default_factory=list)
    """Evaluation sets to check against (the spec's `benchmarks` group, the same list the eval
    stage scores); empty disables decontamination."""
    ngram_size: int = 13
    """n-gram length in normalised words (characters for CJK), as in GPT-3's decontamination."""
    action: Literal["drop", "flag"] = "drop"
    """drop: remove contaminated documents; flag: keep them and only record the matches."""

    def __post_init__(self) -> None:
        if self.ngram_size < 4:
            raise ValueError(f"ngram_size: {self.ngram_size} is too small (< 4) to mean contamination")
        check_benchmark_names(self.benchmarks)


@dataclass
class SlurmConfig:
    """datatrove SlurmPipelineExecutor parameters (see docs/data.md: scaling out)."""

    partition: str = "cpu"
    """Slurm partition."""
    time: str = "04:00:00"
    """Wall-clock limit per array job."""
    cpus_per_task: int = 1
    """CPUs per datatrove task."""
    mem_per_cpu_gb: int = 2
    """Memory per CPU."""
    qos: str = "normal"
    """Slurm QOS."""
    venv_path: Optional[str] = None
    """Activate this virtualenv in the job (path to its bin/activate)."""
    sbatch_args: dict[str, str] = field(default_factory=dict)
    """Extra #SBATCH directives (e.g. {account: myproj})."""


@dataclass
class RayConfig:
    """datatrove RayPipelineExecutor parameters (the Ray cluster must already be reachable)."""

    cpus_per_task: int = 1
    """CPUs per datatrove task."""
    mem_per_cpu_gb: float = 2.0
    """Memory per CPU."""


@dataclass
class ExecutorConfig:
    """Which datatrove executor runs the pipelines; none of this changes the output."""

    kind: Literal["local", "slurm", "ray"] = field(default="local", metadata={"hash": False})
    """local: processes on this machine; slurm / ray: datatrove's cluster executors."""
    workers: int = field(default=2, metadata={"hash": False})
    """Local executor: processes running tasks at once."""
    start_method: Literal["fork", "forkserver", "spawn"] = field(default="fork", metadata={"hash": False})
    """Local executor: how worker processes start; fork is ~2 s faster per pipeline than
    forkserver (no re-import), forkserver is the safe choice if the driver process runs threads."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"hash": False})
    """Used when kind=slurm."""
    ray: RayConfig = field(default_factory=RayConfig, metadata={"hash": False})
    """Used when kind=ray."""
    poll_seconds: float = field(default=30.0, metadata={"hash": False})
    """slurm: how often to check whether the submitted jobs have finished."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers: {self.workers} must be >= 1")


@dataclass
class DataConfig:
    """The data stage: raw sources -> cleaned, deduplicated, decontaminated, packed dataset."""

    sources: list[SourceConfig] = field(
        default_factory=lambda: [SourceConfig(name="stdlib", format="stdlib", max_documents=200)]
    )
    """Corpora to read, each with a blend weight."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Tokenizer to train or load (owned by tokenize_config.py)."""
    pack: PackConfig = field(default_factory=PackConfig)
    """Packing into Megatron .bin/.idx (owned by tokenize_config.py)."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Unicode and whitespace normalisation."""
    pii: PiiConfig = field(default_factory=PiiConfig)
    """Personal data scrubbing."""
    language: LanguageConfig = field(default_factory=LanguageConfig)
    """Language identification and filter."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    """Quality heuristics."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Exact and near-duplicate removal."""
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    """Benchmark n-gram decontamination."""
    tasks: int = 2
    """datatrove tasks (shards) per pipeline; sets the cleaned-file layout, so it is hashed."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """How the pipelines run (local processes, Slurm, Ray)."""
    on_error: Literal["raise", "skip"] = "raise"
    """Bad records (malformed JSON, invalid UTF-8, missing field, empty file): raise, or skip and count."""
    seed: int = 1234
    """Seed for MinHash permutations and for anything random downstream (packing, splits)."""
    num_workers: int = field(default=2, metadata={"hash": False})
    """Processes for tokenization / packing in finalize."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources: at least one source is required")
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sources: names must be unique, repeated: {duplicates}")
        if self.tasks < 1:
            raise ValueError(f"tasks: {self.tasks} must be >= 1")
        if self.num_workers < 1:
            raise ValueError(f"num_workers: {self.num_workers} must be >= 1")


# The data stage's place in the graph: no inputs (it reads corpora named in its config); it
# provides the packed corpus pretrain reads and the tokenizer (with its chat template) that
# conversation data and every later stage use. (`chat` will be its own kind, not this one's code.)
STAGE = Stage(kind="data", module="fullchain.data", config=DataConfig,
              outputs={"packed_corpus": "dataset.json", "tokenizer": "tokenizer"},
              code_excludes=("chat",))
