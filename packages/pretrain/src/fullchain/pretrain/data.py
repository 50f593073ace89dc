"""The data artifact's packed token files -> Megatron GPT datasets and per-rank batches.

The data stage writes `dataset.json` (core's `packed_corpus` contract) next to Megatron .bin/.idx
files; here it becomes `BlendedMegatronDatasetBuilder(GPTDataset)` with one blend per split.
Batches follow Megatron's pretraining sampler: step k of the run reads samples
[k * global_batch, (k + 1) * global_batch) of the (shuffled, blended) train dataset, and each
data-parallel rank takes its own micro-batches of that window. The data position saved in a
checkpoint is therefore one integer, the number of samples consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fullchain.core.contracts import PackedCorpus, PackedSplit

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


class _SpecialTokens:
    """The few tokenizer facts GPTDataset reads (it never tokenizes: the data is packed)."""

    def __init__(self, spec: PackedCorpus) -> None:
        self.vocab_size = spec.vocab_size
        self.eod = spec.eod_id
        self.pad = spec.pad_id
        self.unique_identifiers = {"class": "fullchain.pretrain.data", "vocab_size": spec.vocab_size,
                                   "eod": spec.eod_id, "pad": spec.pad_id}


def split_num_tokens(split: PackedSplit) -> int:
    """Tokens actually present in a split's .bin files (read from the .idx, not trusted from JSON)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    total = 0
    for prefix in split.prefixes:
        # Keep the dataset alive while summing: sequence_lengths is a view into its mmap.
        indexed = IndexedDataset(prefix)
        total += int(indexed.sequence_lengths.sum())
        del indexed
    return total


def check_enough_tokens(spec: PackedCorpus, seq_length: int, global_batch_size: int) -> int:
    """Raise before step 1 when the train split cannot fill one global batch; return its tokens."""
    have = split_num_tokens(spec.splits["train"])
    need = global_batch_size * seq_length + 1
    if have < need:
        raise ValueError(
            f"{spec.path / 'dataset.json'}: splits.train holds {have} tokens, fewer than one global "
            f"batch needs (global_batch_size={global_batch_size} x seq_length={seq_length} + 1 = "
            f"{need}); use more data or a smaller batch/sequence")
    return have


def build_datasets(spec: PackedCorpus, seq_length: int, seed: int, num_samples: dict[str, int],
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
