"""How a job's denoiser calls are cut: which batch sizes a backend takes, and how many rows each call has.

On the CPU every call has :data:`CPU_MICRO_BATCH` rows and one intra-op thread: the CPU kernels
(oneDNN, MKL, MLAS) split a call's reductions by thread count and pick their blocking by batch
shape, so at any other shape or thread count an image's bytes change. Parallelism comes from
running micro-batches side by side instead (:func:`vmddpm_deploy.generation.generate`), one per
intra-op thread the process was given. On a GPU, where large batches are the point, a call has
the job's batch size and the bytes depend on it (recorded as ``micro_batch``,
:mod:`vmddpm_deploy.runtime.arithmetic`).

A TensorRT engine takes the batches of its optimisation profile (``min_batch..max_batch``) and
a graph exported with ``--batch-dim K`` takes exactly K; torch and dynamic-batch graphs take
any. A backend with limits says so with a ``batch_range = (low, high)`` attribute. Every call
already has the micro-batch's rows (:mod:`vmddpm_deploy.generation` pads it); one below ``low``
(a small ``--batch-size`` on a GPU) is padded further with zero rows whose outputs are dropped.
Rows of the network never mix (GroupNorm and LayerNorm are per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vmddpm_deploy.diffusion import Denoiser
from vmddpm_deploy.errors import InvalidArgumentError

#: Images per call where the backend sets no limit: on the CPU the time per image stops falling
#: around this size (README, "Sampling at scale", measured with `vmddpm-deploy bench`), and larger
#: batches only add memory.
DEFAULT_BATCH_SIZE = 16

#: Rows per denoiser call on the CPU, whatever --batch-size: 4 rows per call ran faster than 1
#: (README "Reproducible datasets"), and fewer rows waste less on padding than more.
CPU_MICRO_BATCH = 4


@dataclass(frozen=True)
class CallPlan:
    """How a job's denoiser calls run: ``micro_batch`` rows per call (the images depend on it) and
    ``workers`` calls side by side, each on ``intra_op_threads`` threads (None: leave the
    process's setting; the images depend on neither where it is 1)."""

    micro_batch: int
    workers: int = 1
    intra_op_threads: int | None = None


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


def cpu_micro_batch(denoiser: Denoiser) -> int:
    """CPU_MICRO_BATCH, or the nearest batch ``denoiser`` accepts (a ``--batch-dim K`` graph: K)."""
    accepted = batch_range(denoiser)
    return CPU_MICRO_BATCH if accepted is None else min(max(CPU_MICRO_BATCH, accepted[0]), accepted[1])


def plan_calls(denoiser: Denoiser, device: str | torch.device, batch_size: int) -> CallPlan:
    """On the CPU: fixed micro-batches on one intra-op thread each, as many side by side as the
    process has intra-op threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``, Ray's share).
    Elsewhere: one call per batch of ``batch_size`` rows."""
    if torch.device(device).type == "cpu":
        return CallPlan(cpu_micro_batch(denoiser), workers=torch.get_num_threads(), intra_op_threads=1)
    return CallPlan(batch_size)


def resolve_batch_size(denoiser: Denoiser, requested: int | None, n: int, device: str | torch.device = "cpu") -> int:
    """The batch size (images per sampler pass) a job of ``n`` images runs with: ``requested`` as
    given, else no more than ``n`` of: on the CPU, DEFAULT_BATCH_SIZE or enough micro-batches to
    keep every intra-op thread busy; elsewhere the backend's largest (DEFAULT_BATCH_SIZE where it
    sets none). On the CPU any size runs on any backend: the calls have the micro-batch's rows."""
    accepted = batch_range(denoiser)
    on_cpu = torch.device(device).type == "cpu"
    if requested is None:
        if on_cpu:
            return max(1, min(max(DEFAULT_BATCH_SIZE, cpu_micro_batch(denoiser) * torch.get_num_threads()), n))
        return max(1, min(accepted[1] if accepted is not None else DEFAULT_BATCH_SIZE, n))
    if not on_cpu and accepted is not None and requested > accepted[1]:
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
