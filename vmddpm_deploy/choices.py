"""Every name list a user chooses from, defined once and importable without torch.

The command line builds its option enums and help texts from these lists, so ``vmddpm-deploy
--help`` answers without loading torch. The registries that act on the names (``PRESETS``,
``ops.scan_orders``, ``SAMPLERS``, ``BACKENDS``, the schedule and precision checks) live beside
their torch code; ``tests/test_choices.py`` holds each registry equal to its list here, so a new
sampler, scan order or backend is added in both places or the tests fail.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Model presets (``model/config.py`` ``PRESETS``) and the one ``init`` / ``train`` start from.
PRESET_NAMES: tuple[str, ...] = ("tiny", "small", "base", "large")
DEFAULT_PRESET = "tiny"

#: Scan orders (``ops/scan_orders.py`` tables); the default is ``ModelConfig.scan_order``'s.
SCAN_ORDERS: tuple[str, ...] = ("cross", "regen")
DEFAULT_SCAN_ORDER = "regen"

#: Noise schedules (``diffusion/schedule.py``); the default is ``NoiseSchedule.kind``'s.
SCHEDULE_KINDS: tuple[str, ...] = ("linear", "cosine")
DEFAULT_SCHEDULE_KIND = "linear"

#: Where a sampler's timesteps sit among the training timesteps (``inference_timesteps``): on a
#: grid over T (``GRID_SPACINGS``) or by noise level (``NOISE_LEVEL_SPACINGS``).
TIMESTEP_SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace", "quadratic", "logsnr", "karras")

#: Samplers (``diffusion/reverse_process.py`` ``SAMPLERS``). The default sampler, step count and
#: its spacing are the fewest denoiser calls that keep DDIM 50's quality on the bundled model:
#: README, "Fast sampling at equal quality", measured with ``benchmarks/bench_quality.py``.
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "ddim-ab2", "ddim-ab3", "dpm-solver++")
DEFAULT_SAMPLER = "dpm-solver++"
DEFAULT_STEPS = 8
#: Where each sampler's timesteps sit when no spacing is given: diffusers' default for that
#: scheduler (``leading`` for DDPM, DDIM and PNDM-style multistep DDIM), except the default
#: sampler's, which is the placement it scored best with in the same grid.
DEFAULT_SPACINGS: dict[str, str] = {
    "ddpm": "leading", "ddim": "leading", "ddim-ab2": "leading", "ddim-ab3": "leading", "dpm-solver++": "karras",
}
#: The samplers the C++ host runs too (plugins/host/src/sampler.h), so ``--record-eps`` takes them.
HOST_SAMPLERS: tuple[str, ...] = ("ddim", "ddim-ab2", "ddim-ab3", "dpm-solver++")

#: ``tune-schedule``'s teacher (DDIM over this many leading timesteps, whose grid the tuned timesteps
#: are chosen from) and how many of its trajectories the error is averaged over
#: (``diffusion/schedule_search.py``).
DEFAULT_TEACHER_STEPS = 100
DEFAULT_TEACHER_SPACING = "leading"
DEFAULT_TUNE_TRAJECTORIES = 128

#: Denoiser backends (``runtime/source.py`` ``BACKENDS``); the reference-onnx ones only check
#: graphs (``check``), onnx's ReferenceEvaluator being far too slow to sample with.
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "reference-onnx", "reference-onnx-fp16", "tensorrt")
CHECK_ONLY_BACKENDS: frozenset[str] = frozenset({"reference-onnx", "reference-onnx-fp16"})
#: What ``sample`` and ``--backend`` accept: ``auto`` and every backend fit to sample with.
SAMPLING_BACKENDS: tuple[str, ...] = ("auto", *(name for name in BACKENDS if name not in CHECK_ONLY_BACKENDS))

#: Precisions of exported graphs and TensorRT engines.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: Precisions the torch backend runs (``runtime/torch_backend.py``): the graphs' and bf16 (autocast).
TORCH_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "bf16")
#: What ``sample --precision`` accepts: bf16 is the torch backend's CPU path; ``auto`` resolves per
#: machine (``runtime/source.py`` ``resolve_sampling_precision``).
SAMPLING_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: What ``convert --to`` writes (``conversion.py``): our checkpoint as one safetensors file (raw and
#: EMA weights kept), or :class:`vmddpm_deploy.diffusers.VMDDPMModel`'s ``save_pretrained``
#: directory (the inference weights: EMA where the checkpoint has them).
CONVERSION_TARGETS: tuple[str, ...] = ("safetensors", "diffusers")
#: How an exported graph runs the vmddpm ops: custom nodes (TensorRT plugins) or standard ONNX ops.
EXPORT_OPS: tuple[str, ...] = ("plugin", "portable")


@dataclass(frozen=True)
class ImageFormat:
    """How one ``--format`` lays a shard's images out on disk."""

    suffix: str
    #: True: one file per shard, merged from per-batch parts in .parts/ when the shard completes;
    #: False: one file per sample, written as its batch finishes.
    stacked: bool
    description: str


#: Every output format by its ``--format`` name (``jobs/output_dir.py`` writes them).
IMAGE_FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat(".png", stacked=False, description="one 16-bit PNG per sample"),
    "npz": ImageFormat(".npz", stacked=True, description="one samples.npz"),
    "nifti": ImageFormat(".nii.gz", stacked=False, description="one .nii.gz per sample"),
    "nifti-volume": ImageFormat(
        ".nii.gz", stacked=True,
        description="one samples.nii.gz, samples stacked along z (uint16, header scales to [-1, 1])",
    ),
}
