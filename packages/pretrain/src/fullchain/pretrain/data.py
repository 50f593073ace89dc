"""The data artifact's packed token files -> Megatron GPT datasets and per-rank batches.

The data stage writes `dataset.json` (format "megatron-indexed") next to Megatron .bin/.idx
files; here it becomes `BlendedMegatronDatasetBuilder(GPTDataset)` with one blend per split.
Batches follow Megatron's pretraining sampler: step k of the run reads samples
[k * global_batch, (k + 1) * global_batch) of the (shuffled, blended) train dataset, and each
data-parallel rank takes its own micro-batches of that window. The data position saved in a
checkpoint is therefore one integer, the number of samples consumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitSpec:
    """One split of the data artifact: Megatron path prefixes (absolute) and blend weights."""

    prefixes: list[str]
    weights: list[float]
    num_tokens: list[int]


@dataclass(frozen=True)
class DatasetSpec:
    """What `dataset.json` says, with paths made absolute."""

    path: Path
    tokenizer_dir: Path
    vocab_size: int
    eod_id: int
    pad_id: int
    bos_id: int | None
    dtype: str
    splits: dict[str, SplitSpec]


def _require(doc: dict, key: str, kind: type | tuple, file: Path) -> Any:
    if key not in doc:
        raise ValueError(f"{file}: required key '{key}' is missing")
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{file}: key '{key}' is {value!r}, expected {kind}")
    return value


def read_dataset_spec(artifact_dir: str | Path) -> DatasetSpec:
    """Parse and check the data artifact's `dataset.json`; errors name the file and the key."""
    root = Path(artifact_dir)
    file = root / "dataset.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: the data artifact has no dataset.json")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON: {exc}") from exc
    fmt = _require(doc, "format", str, file)
    if fmt != "megatron-indexed":
        raise ValueError(f"{file}: key 'format' is {fmt!r}, the pretrain stage reads 'megatron-indexed'")
    dtype = _require(doc, "dtype", str, file)
    if dtype not in ("uint16", "int32"):
        raise ValueError(f"{file}: key 'dtype' is {dtype!r}, expected 'uint16' or 'int32'")
    bos = doc.get("bos_id")
    if bos is not None and not isinstance(bos, int):
        raise ValueError(f"{file}: key 'bos_id' is {bos!r}, expected an integer or null")
    splits_doc = _require(doc, "splits", dict, file)
    splits: dict[str, SplitSpec] = {}
    for name, split in splits_doc.items():
        if name not in SPLITS:
            raise ValueError(f"{file}: splits.{name}: unknown split (expected {', '.join(SPLITS)})")
        where = f"{file}: splits.{name}"
        prefixes = split.get("prefixes")
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise ValueError(f"{where}.prefixes must be a list of path prefixes")
        weights = split.get("weights") or [1.0] * len(prefixes)
        num_tokens = split.get("num_tokens") or [0] * len(prefixes)
        if len(weights) != len(prefixes):
            raise ValueError(f"{where}.weights has {len(weights)} entries for {len(prefixes)} prefixes")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise ValueError(f"{where}.weights must be non-negative numbers, got {weights}")
        absolute = []
        for prefix in prefixes:
            full = root / prefix
            for suffix in (".bin", ".idx"):
                if not Path(str(full) + suffix).is_file():
                    raise FileNotFoundError(f"{where}.prefixes: {full}{suffix} does not exist")
            absolute.append(str(full))
        if absolute:
            splits[name] = SplitSpec(absolute, [float(w) for w in weights], list(num_tokens))
    if "train" not in splits:
        raise ValueError(f"{file}: splits.train is missing or has no prefixes")
    return DatasetSpec(
        path=root,
        tokenizer_dir=root / _require(doc, "tokenizer", str, file),
        vocab_size=_require(doc, "vocab_size", int, file),
        eod_id=_require(doc, "eod_id", int, file),
        pad_id=_require(doc, "pad_id", int, file),
        bos_id=bos,
        dtype=dtype,
        splits=splits,
    )


class _SpecialTokens:
    """The few tokenizer facts GPTDataset reads (it never tokenizes: the data is packed)."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.vocab_size = spec.vocab_size
        self.eod = spec.eod_id
        self.pad = spec.pad_id
        self.unique_identifiers = {"class": "fullchain.pretrain.data", "vocab_size": spec.vocab_size,
                                   "eod": spec.eod_id, "pad": spec.pad_id}


def split_num_tokens(split: SplitSpec) -> int:
    """Tokens actually present in a split's .bin files (read from the .idx, not trusted from JSON)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    total = 0
    for prefix in split.prefixes:
        # Keep the dataset alive while summing: sequence_lengths is a view into its mmap.
        indexed = IndexedDataset(prefix)
        total += int(indexed.sequence_lengths.sum())
        del indexed
    return total


def check_enough_tokens(spec: DatasetSpec, seq_length: int, global_batch_size: int) -> int:
    """Raise before step 1 when the train split cannot fill one global batch; return its tokens."""
    have = split_num_tokens(spec.splits["train"])
    need = global_batch_size * seq_length + 1
    if have < need:
        raise ValueError(
            f"{spec.path / 'dataset.json'}: splits.train holds {have} tokens, fewer than one global "
            f"batch needs (global_batch_size={global_batch_size} x seq_length={seq_length} + 1 = "
            f"{need}); use more data or a smaller batch/sequence")
    return have


def build_datasets(spec: DatasetSpec, seq_length: int, seed: int, num_samples: dict[str, int],
                   cache_dir: Path) -> dict[str, Any]:
    """GPT datasets per split ({"train": ds, "valid": ds|None, "test": ds|None}).

    `num_samples[split]` samples are indexed (Megatron repeats epochs as needed); the index files
    go to `cache_dir` (inside our own artifact: the data artifact stays read-only)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    blend_per_split = []
    sizes = []
    for name in SPLITS:
        split = spec.splits.get(name)
        wanted = num_samples.get(name, 0)
        if split is None or wanted == 0:
            blend_per_split.append(None)
            sizes.append(None)
            continue
        blend_per_split.append((split.prefixes, split.weights if len(split.prefixes) > 1 else None))
        sizes.append(wanted)
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=blend_per_split,
        path_to_cache=str(cache_dir),
        tokenizer=_SpecialTokens(spec),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        # The model gets one explicit causal mask (megatron's default one is built on "cuda").
        create_attention_mask=False,
        mid_level_dataset_surplus=0.005,
    )
    datasets = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    return dict(zip(SPLITS, datasets))


class MicroBatchSampler:
    """Index lists of this rank's micro-batches, global batch after global batch.

    Starting at `consumed_samples` makes resuming exact: the same samples in the same order."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int, data_parallel_size: int) -> None:
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __iter__(self) -> Iterator[list[int]]:
        step = self.micro_batch_size * self.data_parallel_size
        start = self.consumed_samples
        while start + step <= self.total_samples:
            first = start + self.data_parallel_rank * self.micro_batch_size
            yield list(range(first, first + self.micro_batch_size))
            start += step

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // (self.micro_batch_size * self.data_parallel_size)


def batch_iterator(dataset: Any, consumed_samples: int, total_samples: int, micro_batch_size: int,
                   data_parallel_rank: int, data_parallel_size: int, num_workers: int = 0) -> Iterator[dict]:
    """An iterator of collated micro-batches ({"tokens", "labels", "loss_mask", "position_ids"})."""
    import torch

    sampler = MicroBatchSampler(total_samples, consumed_samples, micro_batch_size,
                                data_parallel_rank, data_parallel_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        persistent_workers=num_workers > 0)
    return iter(loader)
