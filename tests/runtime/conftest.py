"""One exported micro model (all graphs) shared by the runtime tests: exporting costs seconds."""

from __future__ import annotations

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
