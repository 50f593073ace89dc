"""One name per benchmark item across stages: the eval stage's readers (fullchain.eval.benchmarks)
name every item exactly as the data stage's decontamination does (fullchain.data.decontam), so a
contaminated item found in the corpus is the item eval marks when it scores it. Every benchmark of
the shared group, read from ../shared/data by both real readers."""
from pathlib import Path

import pytest
import yaml
from fullchain.data.decontam import iter_items
from fullchain.eval.benchmarks import reader_for, source_files
from test_conf_tree import compose, convert_all

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NAMES = [b["name"] for b in yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "conf" / "benchmarks" / "shared.yaml").read_text())["benchmarks"]]


@pytest.fixture(scope="module")
def benchmarks():
    if not SHARED.is_dir():
        pytest.skip(f"no {SHARED} beside the checkout (the shared benchmarks)")
    configs = convert_all(compose("experiment=small_cpu"))
    return {b.name: b for b in configs["data"].decontamination.benchmarks}


@pytest.mark.parametrize("name", NAMES)
def test_eval_item_ids_are_the_data_stage_ids(benchmarks, name):
    benchmark = benchmarks[name]
    data_ids = [item for item, _ in iter_items(benchmark)]
    _, reader = reader_for(benchmark.name)
    eval_ids = [item for item, _ in reader(source_files(benchmark.name, benchmark.path))]
    assert len(set(data_ids)) == len(data_ids), benchmark.name
    assert eval_ids and len(set(eval_ids)) == len(eval_ids), benchmark.name
    assert set(eval_ids) <= set(data_ids), (benchmark.name, sorted(set(eval_ids) - set(data_ids))[:5])
    assert len(eval_ids) == len(data_ids), (benchmark.name, len(eval_ids), len(data_ids))
