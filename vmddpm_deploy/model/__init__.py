"""The VM-DDPM denoiser and its configuration."""

from vmddpm_deploy.model.config import PRESETS, ModelConfig, preset
from vmddpm_deploy.model.vmddpm import VMDDPM

__all__ = ["PRESETS", "VMDDPM", "ModelConfig", "preset"]
