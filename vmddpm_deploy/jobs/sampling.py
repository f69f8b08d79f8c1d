"""The one sampling loop: a denoiser and a sampler fill a shard's output directory.

``sample`` (in this process or as Ray workers), ``demo`` and ``benchmarks/bench_quality.py`` all
make their images here, so they pad, batch, time and write the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from vmddpm_deploy.diffusion import Denoiser, Sampler
from vmddpm_deploy.generation import CallTimer, generate
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.spec import job_summary
from vmddpm_deploy.runtime.batching import fit_batches


def sample_shard(
    output: OutputDir,
    denoiser: Denoiser,
    sampler: Sampler,
    image_shape: tuple[int, int, int],
    device: str | torch.device = "cpu",
    on_step: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Make every image ``output``'s shard still lacks; returns the timing summary it recorded.

    Every batch has ``output.settings.batch_size`` rows (a short one is padded, and one below the
    backend's minimum padded further). Sampling and writing overlap: batch k is encoded and
    written by the output's writer thread while batch k+1 is denoised. ``on_step(images)`` follows
    the run in (fractional) images.
    """
    settings = output.settings
    todo = output.todo
    timer = CallTimer(fit_batches(denoiser))
    start = time.perf_counter()
    try:
        for indices, x0 in generate(
            timer, sampler, settings.seed, todo, image_shape, settings.batch_size, device, on_step
        ):
            output.submit(indices, x0.float().cpu().numpy())
    finally:
        output.close()  # also on Ctrl-C: finish the writes in flight, keep progress consistent
    summary = job_summary(
        images=len(todo),
        already_done=len(settings.shard.indices(settings.n)) - len(todo),
        seconds=time.perf_counter() - start,
        denoiser_calls=timer.calls,
        ms_per_denoiser_call=timer.ms_per_call,
        batch_size=settings.batch_size,
        padded_rows=-len(todo) % settings.batch_size,
    )
    output.finish(summary)
    return summary
