"""The one sampling loop: a denoiser and a sampler fill a shard's output directory.

``sample`` (in this process or as Ray workers), ``demo`` and ``benchmarks/bench_quality.py`` all
make their images here, so they pad, batch, time and write the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from vmddpm_deploy.diffusion import Denoiser, Sampler
from vmddpm_deploy.generation import CallTimer, generate
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.spec import job_summary
from vmddpm_deploy.runtime.batching import fit_batches, plan_calls


def sample_shard(
    output: OutputDir,
    denoiser: Denoiser,
    sampler: Sampler,
    image_shape: tuple[int, int, int],
    device: str | torch.device = "cpu",
    on_step: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Make every image ``output``'s shard still lacks; returns the timing summary it recorded.

    Batches of ``output.settings.batch_size`` images, each evaluated in denoiser calls of the
    recorded ``arithmetic.micro_batch`` rows (a short one is padded, and one below the backend's
    minimum padded further); on the CPU each call runs on one intra-op thread, as many side by side
    as the process has threads (:func:`plan_calls`). Sampling and writing overlap: batch k is
    encoded and written by the output's writer thread while batch k+1 is denoised.
    ``on_step(images)`` follows the run in (fractional) images.
    """
    settings = output.settings
    todo = output.todo
    batch_size, micro_batch = settings.batch_size, settings.arithmetic.micro_batch
    calls = dataclasses.replace(plan_calls(denoiser, device, batch_size), micro_batch=micro_batch)
    if getattr(denoiser, "needs_calls_in_order", False):
        # An eps recording is replayed call by call in the host's order: micro-batches one after
        # the other (the bytes do not depend on how many run side by side).
        calls = dataclasses.replace(calls, workers=1)
    timer = CallTimer(fit_batches(denoiser))
    start = time.perf_counter()
    try:
        for indices, x0 in generate(
            timer, sampler, settings.seed, todo, image_shape, batch_size, device, on_step, calls=calls
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
        batch_size=batch_size,
        padded_rows=sum(-min(batch_size, len(todo) - i) % micro_batch for i in range(0, len(todo), batch_size)),
    )
    output.finish(summary)
    return summary
