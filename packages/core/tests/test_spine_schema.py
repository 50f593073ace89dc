"""core.schema, the vocabulary stages share: which fields a step id hashes (logging never, a
benchmark's file by content), and the rules each sub-config checks on its own."""
from dataclasses import dataclass, field

import pytest
from fullchain.core.config import ConfigError, to_dataclass
from fullchain.core.hashing import ContentHasher, hash_view
from fullchain.core.schema import (
    BatchConfig,
    BenchmarkConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
)


@dataclass
class TrainingStage:
    batch: BatchConfig = field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)


def _view(tmp_path, **spec):
    return hash_view(to_dataclass(TrainingStage, spec, "stage"), ContentHasher(), "stage")


def test_logging_is_never_hashed_and_the_optimizer_is(tmp_path):
    base = _view(tmp_path)
    assert _view(tmp_path, logging={"log_interval": 50, "wandb": "offline", "peak_flops": 1e12}) == base
    assert _view(tmp_path, optimizer={"lr": 1e-3}) != base
    assert _view(tmp_path, schedule={"warmup_iters": 20}) != base


def test_a_benchmark_is_hashed_by_the_content_of_its_files(tmp_path):
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "test.jsonl").write_text('{"question": "2+2?"}\n')

    def view(where):
        return _view(tmp_path, benchmarks=[{"name": "quiz", "path": str(tmp_path / where / "*.jsonl")}])

    assert view("a") == view("b")  # same content elsewhere: same id
    (tmp_path / "b" / "test.jsonl").write_text('{"question": "3+3?"}\n')
    assert view("a") != view("b")


@pytest.mark.parametrize("spec, message", [
    ({"batch": {"global_batch_size": 6, "micro_batch_size": 4}},
     r"^stage\.batch\.global_batch_size: 6 is not divisible by micro_batch_size=4"),
    ({"schedule": {"train_iters": None}}, r"^stage\.schedule\.train_iters: set train_iters or epochs"),
    ({"schedule": {"train_iters": 10, "warmup_iters": 10}}, r"^stage\.schedule\.warmup_iters: 10 must be"),
    ({"optimizer": {"adam_beta2": 1.0}}, r"^stage\.optimizer\.adam_beta1: betas \(0.9, 1.0\)"),
    ({"logging": {"wandb": "cloud"}}, r"^stage\.logging\.wandb: 'cloud' is not one of"),
    ({"benchmarks": [{"name": "a b", "path": "x.jsonl"}]}, r"^stage\.benchmarks\[0\]\.name: 'a b'"),
    ({"benchmarks": [{"name": "q", "path": "x.jsonl", "text_fields": []}]},
     r"^stage\.benchmarks\[0\]\.text_fields: benchmark 'q' lists no fields"),
])
def test_each_sub_config_names_its_field(spec, message):
    with pytest.raises(ConfigError, match=message):
        to_dataclass(TrainingStage, spec, "stage")


def test_epochs_stand_in_for_a_step_count():
    schedule = ScheduleConfig(train_iters=None, epochs=2.0, warmup_iters=5)
    assert schedule.decay_iters is None
    with pytest.raises(ValueError, match="^schedule.min_lr: 1.0 must be within"):
        ScheduleConfig(min_lr=1.0).check_lr(OptimizerConfig(lr=1e-3))
