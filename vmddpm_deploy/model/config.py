"""Model configuration: a frozen dataclass, plain JSON data, and the named presets.

Every architectural guess we made while reconstructing VM-DDPM from its abstract (docs/design.md
section 1) is a field here, so a reader of the paper's body can correct it without code changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vmddpm_deploy.choices import DEFAULT_PRESET, DEFAULT_SCAN_ORDER
from vmddpm_deploy.errors import ConfigError
from vmddpm_deploy.ops.scan_orders import SCAN_ORDERS


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 32
    in_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    layers_per_level: int = 1  # SSLayers per encoder level (the decoder has one more)
    mid_layers: int = 1
    scan_order: str = DEFAULT_SCAN_ORDER  # "cross" (VMamba) or "regen" (snake re-threading)
    d_state: int = 16  # N of the selective scan
    ssm_ratio: float = 2.0  # SS2D inner width = ssm_ratio * channels
    dt_rank: int = 0  # 0 means ceil(channels / 16), VMamba's "auto"
    mlp_ratio: float = 0.0  # optional MLP after each MSSBlock; 0 disables it
    norm_groups: int = 32  # GroupNorm groups, reduced to gcd(groups, channels) per layer
    dropout: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 4:
            problems.append(f"image_size must be >= 4, got {self.image_size}")
        if self.in_channels < 1:
            problems.append(f"in_channels must be >= 1, got {self.in_channels}")
        if self.base_channels < 1:
            problems.append(f"base_channels must be >= 1, got {self.base_channels}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            problems.append(f"channel_mult must be non-empty positive ints, got {self.channel_mult}")
        elif self.image_size % (2 ** (len(self.channel_mult) - 1)):
            problems.append(
                f"image_size {self.image_size} is not divisible by 2^{len(self.channel_mult) - 1} "
                f"(one halving per level of channel_mult)"
            )
        if self.layers_per_level < 1 or self.mid_layers < 0:
            problems.append("layers_per_level must be >= 1 and mid_layers >= 0")
        if self.scan_order not in SCAN_ORDERS:
            problems.append(f"scan_order must be one of {', '.join(SCAN_ORDERS)}, got {self.scan_order!r}")
        if self.d_state < 1 or self.ssm_ratio <= 0 or self.dt_rank < 0 or self.mlp_ratio < 0:
            problems.append("d_state >= 1, ssm_ratio > 0, dt_rank >= 0 and mlp_ratio >= 0 are required")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    def dt_rank_for(self, channels: int) -> int:
        return self.dt_rank or math.ceil(channels / 16)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channel_mult"] = list(self.channel_mult)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s): {', '.join(unknown)}")
        values = dict(data)
        if "channel_mult" in values:
            values["channel_mult"] = tuple(values["channel_mult"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from None


#: Named presets, one per name of ``choices.PRESET_NAMES`` (docs/design.md section 1); the README
#: lists parameters and GFLOPs of each.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(image_size=32, base_channels=48, channel_mult=(1, 2, 2)),
    "small": ModelConfig(image_size=64, base_channels=64, channel_mult=(1, 2, 2, 4)),
    "base": ModelConfig(image_size=128, base_channels=96, channel_mult=(1, 1, 2, 2, 4)),
    "large": ModelConfig(image_size=256, base_channels=128, channel_mult=(1, 1, 2, 2, 4, 4)),
}

#: The preset ``init`` and ``train`` start from when none is named.
DEFAULT_PRESET_NAME = DEFAULT_PRESET


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with ``overrides`` applied (e.g. ``scan_order="cross"``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
