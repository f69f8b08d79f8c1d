"""One exported micro model (all graphs) shared by the runtime tests: exporting costs seconds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export import export_checkpoint
from vmddpm_deploy.model import ModelConfig

MICRO = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)


@pytest.fixture(scope="package")
def exported(tmp_path_factory):
    """(checkpoint path, export dir) of a micro model with fp32, fp16 and portable graphs."""
    root = tmp_path_factory.mktemp("exported")
    ckpt = save_checkpoint(init_checkpoint(MICRO, NoiseSchedule(), seed=3), root / "micro.pt")
    export_checkpoint(ckpt, root / "export", dtypes=("fp32", "fp16"), ops=("plugin", "portable"))
    return ckpt, root / "export"


def orphaned_copy(exported, tmp_path: Path) -> Path:
    """A copy of the export whose manifest names a checkpoint that no longer exists (gone.pt)."""
    _, export_dir = exported
    moved = Path(shutil.copytree(export_dir, tmp_path / "export"))
    manifest = moved / "manifest.json"
    data = json.loads(manifest.read_text())
    data["source"] |= {"checkpoint": "../gone.pt", "checkpoint_absolute": str(tmp_path / "gone.pt")}
    manifest.write_text(json.dumps(data))
    return moved


def corrupted_copy(export_dir: Path, tmp_path: Path, graph: str, corrupt: Callable[[bytes], bytes]) -> Path:
    """A copy of the export with ``graph``'s bytes replaced by ``corrupt(bytes)`` (its sha256 no longer matches)."""
    broken = Path(shutil.copytree(export_dir, tmp_path / "broken"))
    (broken / graph).write_bytes(corrupt((broken / graph).read_bytes()))
    return broken
