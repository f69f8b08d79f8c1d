"""The denoiser as a diffusers model: ``VMDDPMModel(sample, timestep).sample`` is eps.

The config is ``ModelConfig``'s fields plus what diffusers' pipelines read (``sample_size``,
``in_channels``) and the noise schedule the weights were trained with (``noise_schedule``), so a
``save_pretrained`` directory is a complete SRC for ``sample``, ``export`` and ``check``
(:func:`vmddpm_deploy.checkpoint.load_pretrained_directory` reads it without diffusers). The
wrapped denoiser is ``self.model``: the weights file holds ``model.*``, as our checkpoints do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

from vmddpm_deploy.checkpoint import Checkpoint
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.errors import ConfigError
from vmddpm_deploy.model import VMDDPM, ModelConfig


@dataclass
class VMDDPMOutput(BaseOutput):
    """``sample``: the predicted noise eps, shaped like the input."""

    sample: torch.Tensor


_DEFAULTS = ModelConfig()


class VMDDPMModel(ModelMixin, ConfigMixin):
    """VM-DDPM for diffusers: ``forward(sample, timestep) -> VMDDPMOutput(sample=eps)``.

    ``timestep`` is one int (or 0-d tensor) for the whole batch, as diffusers' pipelines pass it,
    or one per sample. The parameters are ``ModelConfig``'s fields; ``sample_size`` must equal
    ``image_size`` (diffusers' pipelines read it); ``noise_schedule`` is a ``NoiseSchedule`` dict.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = _DEFAULTS.image_size,
        in_channels: int = _DEFAULTS.in_channels,
        base_channels: int = _DEFAULTS.base_channels,
        channel_mult: tuple[int, ...] = _DEFAULTS.channel_mult,
        layers_per_level: int = _DEFAULTS.layers_per_level,
        mid_layers: int = _DEFAULTS.mid_layers,
        scan_order: str = _DEFAULTS.scan_order,
        d_state: int = _DEFAULTS.d_state,
        ssm_ratio: float = _DEFAULTS.ssm_ratio,
        dt_rank: int = _DEFAULTS.dt_rank,
        mlp_ratio: float = _DEFAULTS.mlp_ratio,
        norm_groups: int = _DEFAULTS.norm_groups,
        dropout: float = _DEFAULTS.dropout,
        sample_size: int | None = None,
        noise_schedule: dict[str, Any] | None = None,
    ):
        super().__init__()
        fields = {field.name: getattr(self.config, field.name) for field in dataclasses.fields(ModelConfig)}
        config = ModelConfig.from_dict(fields | {"channel_mult": tuple(channel_mult)})
        if sample_size not in (None, image_size):
            raise ConfigError(f"sample_size {sample_size} differs from image_size {image_size}")
        schedule = NoiseSchedule() if noise_schedule is None else NoiseSchedule.from_dict(noise_schedule)
        self.register_to_config(sample_size=image_size, noise_schedule=schedule.to_dict())
        self.model = VMDDPM(config)

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_dict(dict(self.config.noise_schedule))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, return_dict: bool = True):
        t = torch.as_tensor(timestep, device=sample.device).to(torch.int64)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])
        eps = self.model(sample, t)
        return VMDDPMOutput(sample=eps) if return_dict else (eps,)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> VMDDPMModel:
        """The model with ``checkpoint``'s inference weights (EMA when present), in eval mode."""
        model = cls(**checkpoint.config.to_dict(), noise_schedule=checkpoint.schedule.to_dict())
        model.model.load_state_dict(checkpoint.inference_weights)
        return model.eval()

    def to_checkpoint(self) -> Checkpoint:
        weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        return Checkpoint(self.model_config, self.noise_schedule, weights)
