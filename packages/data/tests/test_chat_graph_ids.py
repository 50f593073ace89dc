"""chat_data is a node of its own: changing its config or its code leaves the corpus's (`data`)
and pretrain's step ids unchanged; changing the data package's own code changes data's id, and
chat_data's (which uses those modules)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fullchain.core import graph
from fullchain.core import spec as spec_mod
from fullchain.core.config import ConfigError

REPO = Path(__file__).resolve().parents[3]


def ids(tmp_path, *overrides: str) -> dict[str, str]:
    spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(REPO / "conf", ["experiment=tiny", "stages=[data,chat_data,pretrain]", *overrides])))
    return {step.name: step.step_id for step in graph.build(spec, tmp_path / "store")}


def test_chat_data_config_changes_leave_data_and_pretrain_ids(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("FULLCHAIN_SHARED_DATA", str(shared_data))
    base = ids(tmp_path)
    assert set(base) == {"data", "chat_data", "pretrain"}
    for overrides in (["chat_data.seq_length=256"], ["++chat_data.tool_use.train_tasks=10"],
                      ["chat_data=shared"], ["chat_data=dpo"]):
        changed = ids(tmp_path, *overrides)
        assert changed["chat_data"] != base["chat_data"], overrides
        assert (changed["data"], changed["pretrain"]) == (base["data"], base["pretrain"]), overrides
    # the tokenizer is chat_data's input: a new corpus gives new conversations (lengths change)
    assert ids(tmp_path, "tokenizer.vocab_size=2048")["chat_data"] != base["chat_data"]


_CODE_IDS = """
import sys
from fullchain.core.hashing import code_version
from fullchain.data.config import STAGE as DATA
from fullchain.data.chat.config import STAGE as CHAT
import fullchain.data
assert fullchain.data.__file__.startswith(sys.argv[1]), fullchain.data.__file__
print(code_version(DATA.module, exclude=DATA.code_excludes),
      code_version(CHAT.code_package or CHAT.module, exclude=CHAT.code_excludes))
"""


def test_chat_code_changes_leave_the_data_code_id(tmp_path):
    """On a copy of the data package (first on PYTHONPATH), so the checkout is never touched."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "packages" / "data" / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))

    def code_ids() -> list[str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, "-c", _CODE_IDS, str(copy)], capture_output=True, text=True,
                                env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    data, chat = code_ids()
    with open(copy / "fullchain" / "data" / "chat" / "stage.py", "a") as handle:
        handle.write("\n# a change to the chat stage's code\n")
    data_after, chat_after = code_ids()
    assert data_after == data and chat_after != chat
    with open(copy / "fullchain" / "data" / "clean.py", "a") as handle:
        handle.write("\n# a change to the corpus stage's code\n")
    data_changed, chat_changed = code_ids()
    assert data_changed != data  # the check can fail: data's own code is hashed
    # chat_data uses the data package's modules (decontamination, config): their code is its too
    assert chat_changed != chat_after


def test_a_tiny_plan_has_the_chat_data_node(tmp_path):
    spec = spec_mod.materialize(spec_mod.to_spec(spec_mod.compose(REPO / "conf", ["experiment=tiny"])))
    steps = {step.name: step for step in graph.build(spec, tmp_path / "store")}
    chat = steps["chat_data"]
    assert chat.kind == "data.chat" and chat.path.parent == tmp_path / "store" / "data.chat"
    assert chat.inputs["tokenizer"] is steps["data"]
    assert chat.stage.outputs_for(chat.config) == {"conversations": "conversations", "tool_tasks": "tasks"}
    with pytest.raises(ConfigError, match=r"graph.chat_data.inputs.tokenizer: takes a tokenizer artifact, but "
                                        r"node 'pretrain'"):
        rewired = dict(spec, graph={**spec["graph"], "chat_data": {"stage": "data.chat",
                                                                   "inputs": {"tokenizer": "pretrain"}}})
        graph.build(rewired, tmp_path / "store")
