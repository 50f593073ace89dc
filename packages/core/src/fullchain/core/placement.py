"""Where a step will run: its world size and the hardware it gets, decided before hashing.

A config value like `precision: auto` means different outputs on a CPU (fp32) and a GPU (bf16),
so step ids are computed from RESOLVED values: a stage config may define

    def resolve(self, placement: Placement) -> None

which replaces its `auto` fields in place (and raises ValueError, naming the field, for a layout
the placement cannot hold, e.g. tensor x pipeline parallel not dividing the world). The graph
calls it before hashing; the manifest records the placement.

The probe reads files only (no torch import, so `plan` stays fast): an environment counts as
CUDA when its torch build has CUDA (torch/version.py) and this machine has an NVIDIA device; under
the SLURM launcher the job's `gpus_per_node` decides instead, since the step runs elsewhere.
"""
from __future__ import annotations

import glob
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Placement:
    world_size: int
    """Processes the launcher starts for the step (torchrun nproc x nodes; 1 otherwise)."""
    accelerator: str
    """'cuda' or 'cpu'."""
    device_count: int
    """Accelerators per node (0 on CPU)."""
    transformer_engine: bool
    """TransformerEngine importable in the step's environment (and a GPU to run it)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_PROBE = r"""
import importlib.util, json, os, re
spec = importlib.util.find_spec("torch")
cuda = None
if spec and spec.submodule_search_locations:
    version = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    if os.path.isfile(version):
        match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", open(version).read(), re.M)
        cuda = match.group(1) if match else None
te = importlib.util.find_spec("transformer_engine") is not None
print(json.dumps({"torch_cuda": cuda, "transformer_engine": te}))
"""

_probed: dict[str, dict] = {}


def probe_environment(python: Path | None) -> dict[str, Any]:
    """What the step's interpreter could use: its torch's CUDA version and TransformerEngine.
    Finds packages without importing them; cached per interpreter per process."""
    key = str(python)
    if key not in _probed:
        result = {"torch_cuda": None, "transformer_engine": False}
        if python is not None and Path(python).exists():
            out = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                                 timeout=60, check=False)
            if out.returncode == 0:
                import json

                result = json.loads(out.stdout)
        _probed[key] = result
    return _probed[key]


def local_gpu_count() -> int:
    """NVIDIA devices on this machine (the driver's /proc entries, else /dev nodes)."""
    found = glob.glob("/proc/driver/nvidia/gpus/*")
    if not found:
        found = [d for d in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", d)]
    return len(found)


def placement_for(launcher: Any, names: tuple[str, ...], python: Path | None,
                  distributed: bool) -> Placement:
    """The placement of one step under `launcher` (a LauncherConfig)."""
    world = launcher.nproc_per_node * launcher.nnodes if distributed else 1
    env = probe_environment(python)
    if launcher.name == "slurm":
        gpus = launcher.slurm.gpus_per_node or 0
        cuda = gpus > 0
    else:
        gpus = local_gpu_count()
        cuda = gpus > 0 and bool(env.get("torch_cuda"))
    return Placement(world_size=world, accelerator="cuda" if cuda else "cpu",
                     device_count=gpus if cuda else 0,
                     transformer_engine=bool(cuda and env.get("transformer_engine")))
