"""Which batch sizes a denoiser takes, and running a job's batches on one with a fixed range.

A TensorRT engine takes the batches of its optimisation profile (``min_batch..max_batch``) and
a graph exported with ``--batch-dim K`` takes exactly K; torch and dynamic-batch graphs take
any. A backend with limits says so with a ``batch_range = (low, high)`` attribute. Sampling
runs every batch of a job on such a backend: the default batch size is the profile's largest.
Every batch already has the job's batch size (:mod:`vmddpm_deploy.generation` pads it); one
below ``low`` (a small ``--batch-size``) is padded further with zero rows whose outputs are
dropped. Rows of the network never mix (GroupNorm and LayerNorm are per sample).
"""

from __future__ import annotations

import torch

from vmddpm_deploy.diffusion import Denoiser
from vmddpm_deploy.errors import InvalidArgumentError

#: Images per call where the backend sets no limit: on the CPU the time per image stops falling
#: around this size (README, "Sampling at scale", measured with `vmddpm-deploy bench`), and larger
#: batches only add memory.
DEFAULT_BATCH_SIZE = 16


def batch_range(denoiser: Denoiser) -> tuple[int, int] | None:
    """``(low, high)`` batch sizes ``denoiser`` accepts, or None when it takes any."""
    return getattr(denoiser, "batch_range", None)


def check_batch(denoiser_name: str, accepted: tuple[int, int] | None, batch: int) -> None:
    """Raise the one-line error for a batch outside ``accepted`` (a backend calls this first)."""
    if accepted is None or accepted[0] <= batch <= accepted[1]:
        return
    low, high = accepted
    taken = f"exactly batch {low}" if low == high else f"batches {low}..{high}"
    raise InvalidArgumentError(
        f"{denoiser_name} takes {taken}, not {batch}; use a batch size in that range, or re-export "
        "with --batch-dim dynamic / build an engine with a wider --min-batch/--max-batch"
    )


def resolve_batch_size(denoiser: Denoiser, requested: int | None, n: int) -> int:
    """The batch size a job of ``n`` images runs with: ``requested`` as given (the images depend on
    it, so it is never changed behind the user's back), else the backend's largest
    (DEFAULT_BATCH_SIZE where it sets none) but no more than ``n``."""
    accepted = batch_range(denoiser)
    if requested is None:
        return max(1, min(accepted[1] if accepted is not None else DEFAULT_BATCH_SIZE, n))
    if accepted is not None and requested > accepted[1]:
        raise InvalidArgumentError(
            f"--batch-size {requested} is larger than this backend takes (at most {accepted[1]}); "
            f"use --batch-size {accepted[1]} or leave it out"
        )
    return requested


class PaddedDenoiser:
    """Runs batches smaller than ``denoiser``'s minimum by padding them with zero rows.

    x: (batch, C, H, W), t: (batch,) -> eps: (batch, C, H, W), for any batch up to the maximum.
    """

    def __init__(self, denoiser: Denoiser, low: int):
        self.denoiser, self.low = denoiser, low

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if batch >= self.low:
            return self.denoiser(x, t)
        rows = self.low - batch
        x = torch.cat([x, x.new_zeros(rows, *x.shape[1:])])
        t = torch.cat([t, t[-1:].expand(rows)])  # a timestep the schedule has
        return self.denoiser(x, t)[:batch]


def fit_batches(denoiser: Denoiser) -> Denoiser:
    """``denoiser``, padded where it has a minimum batch above 1."""
    accepted = batch_range(denoiser)
    return PaddedDenoiser(denoiser, accepted[0]) if accepted is not None and accepted[0] > 1 else denoiser
