"""scripts/bundle_demo_checkpoint.py: a training checkpoint in, the shipped safetensors form out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import Checkpoint, init_checkpoint, is_safetensors_file, load_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bundle_demo_checkpoint.py"


def test_bundles_the_ema_weights_as_fp16_safetensors(tmp_path, micro_config):
    base = init_checkpoint(micro_config, NoiseSchedule(), seed=4)
    ema = {k: v + 0.25 for k, v in base.model.items()}
    source = save_checkpoint(Checkpoint(base.config, base.schedule, base.model, ema), tmp_path / "run.pt")
    out = tmp_path / "demo.safetensors"
    result = subprocess.run([sys.executable, str(SCRIPT), str(source), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert is_safetensors_file(out)
    bundled = load_checkpoint(out)
    assert bundled.ema is None and bundled.model["stem.weight"].dtype == torch.float16
    assert torch.equal(bundled.model["stem.weight"], ema["stem.weight"].half())
    refused = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "demo.pt")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "OUT must be a .safetensors file" in refused.stderr
