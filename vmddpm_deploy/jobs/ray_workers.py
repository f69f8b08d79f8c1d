"""Sampling on a Ray cluster: the shards of :mod:`vmddpm_deploy.jobs.output_dir` as Ray actors.

Worker ``w`` of ``W`` *is* shard ``w/W`` of the job: it loads its own denoiser (one per GPU, or
an equal slice of the CPUs), makes the indices ``i`` with ``i % W == w`` and writes them into
the shared output directory exactly as ``sample --shard w/W`` would, progress file included. So a
Ray run and a job array of ``W`` tasks leave the same files and either one resumes the other.
The driver polls the workers' progress for one progress bar. SRC and ``--out`` must be on a
filesystem every node sees (as for a job array); each worker checks SRC's sha256 against the
driver's.

Ray is imported only here and only when used: ``pip install 'vmddpm-deploy[distributed]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from vmddpm_deploy.errors import BackendUnavailableError, InvalidArgumentError, VmddpmError
from vmddpm_deploy.jobs.spec import JobSettings, Shard, job_summary

INSTALL_HINT = "pip install 'vmddpm-deploy[distributed]'"
#: How often the driver asks the workers how far they are.
POLL_SECONDS = 0.5


def import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_connection(address: str) -> Iterator[Any]:
    """Yield the ``ray`` module, connected to ``address``.

    ``local`` starts a Ray instance on this machine (and stops it afterwards); ``auto`` joins the
    cluster running here; ``HOST:PORT`` or ``ray://HOST:PORT`` joins that one. A process that is
    already connected (e.g. a test's ``ray.init(...)``) keeps its connection.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,  # workers print nothing useful; errors come back as exceptions
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailableError(
            f"cannot connect to Ray at {address!r}: {reason}; start one with `ray start --head` or use --ray local"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """How many workers, and the Ray resources each one reserves."""

    count: int
    resources: dict[str, float]
    threads: int


def plan_workers(cluster: dict[str, float], device: str, workers: int | None, n: int) -> WorkerPlan:
    """One worker per GPU for ``cuda``; for ``cpu`` ``workers`` (default: one per CPU) sharing
    the cluster's CPUs equally. Never more workers than images."""
    if device == "cuda":
        gpus = int(cluster.get("GPU", 0))
        if gpus == 0:
            raise BackendUnavailableError("the Ray cluster has no GPUs; use --device cpu")
        count = workers or gpus
        if count > gpus:
            raise InvalidArgumentError(f"--workers {count} needs {count} GPUs, the Ray cluster has {gpus}")
        return WorkerPlan(min(count, n), {"num_gpus": 1, "num_cpus": 1}, threads=1)
    cpus = int(cluster.get("CPU", 0))
    count = workers or cpus
    if count > cpus:
        raise InvalidArgumentError(f"--workers {count} needs {count} CPUs, the Ray cluster has {cpus}")
    count = min(count, n)
    threads = cpus // count
    return WorkerPlan(count, {"num_cpus": threads}, threads=threads)


class _Stopped(Exception):
    """Raised inside a worker's sampling loop when the driver asks it to stop."""


class ShardWorker:
    """One shard of the job inside a Ray actor: its own denoiser and :class:`OutputDir`, filled by
    the same :func:`~vmddpm_deploy.jobs.sampling.sample_shard` as ``sample``.

    Runs with ``max_concurrency=2`` so that ``completed()`` and ``stop()`` are answered while
    ``run()`` samples.
    """

    def __init__(self) -> None:
        self._completed = 0.0
        self._stop = threading.Event()

    def prepare(
        self, source: str, backend: str, device: str, out: str, settings: JobSettings, resume: bool,
        threads: int,
    ) -> tuple[float, str, dict[str, Any]]:
        """Load the denoiser and open the shard's output; returns (images already done, backend,
        the arithmetic its images are computed in).

        ``backend`` may be ``auto``: it is resolved here, on the worker's node and device.
        """
        import torch

        from vmddpm_deploy.jobs.prepare import JobPlan, prepare_job
        from vmddpm_deploy.runtime.source import open_source

        if device == "cpu":
            torch.set_num_threads(threads)
        plan = JobPlan(open_source(source), settings)  # this node's SRC, the driver's settings
        self._output, self._denoiser, self._backend = prepare_job(
            plan, Path(out), backend=backend, device=device, resume=resume
        )
        self._sampler, self._image_shape, self._device = plan.make_sampler(), plan.image_shape, device
        self._completed = float(len(settings.shard.indices(settings.n)) - len(self._output.todo))
        return self._completed, self._backend, dataclasses.asdict(self._output.settings.arithmetic)

    def run(self) -> dict[str, Any] | None:
        """Sample every image the shard lacks; the shard's summary, or None when stopped."""
        from vmddpm_deploy.jobs import sampling

        def on_step(images: float) -> None:
            if self._stop.is_set():
                raise _Stopped
            self._completed += images

        try:
            summary = sampling.sample_shard(
                self._output, self._denoiser, self._sampler, self._image_shape, self._device, on_step
            )
        except _Stopped:
            return None  # sample_shard finished the writes in flight: the directory is consistent
        return summary | {"backend": self._backend}

    def completed(self) -> float:
        """Images done so far, fractional while a batch is being denoised."""
        return self._completed

    def stop(self) -> None:
        self._stop.set()


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get`` that re-raises a worker's VmddpmError as itself (one clear line, its exit code)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, VmddpmError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise BackendUnavailableError(
            f"a Ray worker died ({reason}); the images already written are kept: rerun with --resume"
        ) from None


def merge_summaries(summaries: Sequence[dict[str, Any]], seconds: float, backends: Sequence[str]) -> dict[str, Any]:
    """One job summary from the shards' summaries and the driver's wall time."""
    calls = sum(s["denoiser_calls"] for s in summaries)
    call_ms = sum(s["ms_per_denoiser_call"] * s["denoiser_calls"] for s in summaries)
    return job_summary(
        images=sum(s["images"] for s in summaries),
        already_done=sum(s["already_done"] for s in summaries),
        seconds=seconds,
        denoiser_calls=calls,
        ms_per_denoiser_call=call_ms / calls if calls else 0.0,
        batch_size=max(s["batch_size"] for s in summaries),
        padded_rows=sum(s["padded_rows"] for s in summaries),
        workers=len(summaries),
        backend=",".join(sorted(set(backends))),
    )


class RayJob:
    """The whole job (``settings.shard`` must be 0/1) as ``W`` Ray workers, shard ``w/W`` each.

    Entering connects to Ray, starts the workers and has each load its denoiser and open its
    shard (so every setup error arrives before any sampling); :meth:`run` samples; leaving stops
    the workers (and the Ray instance, when ``address="local"`` started one)::

        with RayJob(source, settings, out, backend="auto", device="cuda") as job:
            summary = job.run(on_progress=print)
    """

    def __init__(
        self,
        source: Path,
        settings: JobSettings,
        out: Path,
        *,
        backend: str,
        device: str,
        resume: bool = False,
        address: str = "local",
        workers: int | None = None,
    ):
        if settings.shard.count != 1:
            raise InvalidArgumentError("--shard and --ray both split the job; use one of them")
        if device not in ("cpu", "cuda"):
            raise InvalidArgumentError(
                f"--ray gives every worker its own device: pass --device cuda or cpu, not {device}"
            )
        if workers is not None and workers < 1:
            raise InvalidArgumentError(f"--workers must be at least 1, got {workers}")
        self.source, self.settings, self.out = Path(source).resolve(), settings, Path(out).resolve()
        self.backend, self.device, self.resume = backend, device, resume
        self.address, self.workers = address, workers
        #: Images of the job already on disk when the workers started (from an earlier run).
        self.already_done = 0.0
        self._exit = ExitStack()

    def __enter__(self):  # -> Self (typing.Self needs Python 3.11)
        with ExitStack() as stack:
            self._ray = ray = stack.enter_context(ray_connection(self.address))
            plan = plan_workers(ray.cluster_resources(), self.device, self.workers, self.settings.n)
            actor = ray.remote(ShardWorker).options(max_concurrency=2, **plan.resources)
            self._actors = [actor.remote() for _ in range(plan.count)]
            stack.callback(lambda: [ray.kill(worker) for worker in self._actors])
            prepared = _get(ray, [
                worker.prepare.remote(
                    str(self.source), self.backend, self.device, str(self.out),
                    dataclasses.replace(self.settings, shard=Shard(w, plan.count)), self.resume,
                    plan.threads,
                )
                for w, worker in enumerate(self._actors)
            ])
            # Each worker resolves auto, its device and its micro-batch on its own node; shards of one
            # job must share the arithmetic (the images depend on it).
            first = prepared[0][2]
            for _, _, arithmetic in prepared[1:]:
                field = next((key for key in first if arithmetic[key] != first[key]), None)
                if field is not None:
                    raise InvalidArgumentError(
                        f"the Ray workers would compute images in different arithmetic ({field} {first[field]!r} "
                        f"and {arithmetic[field]!r}); pass --backend (and --batch-size on GPUs) or run on alike nodes"
                    )
            self.already_done = sum(done for done, _, _ in prepared)
            self._backends = [backend for _, backend, _ in prepared]
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def run(self, on_progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Sample every image the job lacks; returns the merged summary (see :func:`merge_summaries`).

        ``on_progress(images_done)`` is called about every ``POLL_SECONDS`` with the job-wide
        count (out of ``settings.n``). On Ctrl-C, or when one worker fails, the others finish
        their writes in flight and stop, so ``--resume`` (with or without Ray) continues.
        """
        ray, actors = self._ray, self._actors
        start = time.perf_counter()
        runs = {worker.run.remote(): worker for worker in actors}
        summaries = []
        try:
            while runs:
                ready, _ = ray.wait(list(runs), num_returns=len(runs), timeout=POLL_SECONDS)
                for ref in ready:
                    del runs[ref]
                    summaries.append(_get(ray, ref))
                if on_progress is not None:
                    on_progress(sum(_get(ray, [worker.completed.remote() for worker in actors])))
        except BaseException:
            if runs:
                stops = [worker.stop.remote() for worker in actors]
                ray.wait(stops, num_returns=len(stops), timeout=10)
                ray.wait(list(runs), num_returns=len(runs), timeout=60)
            raise
        return merge_summaries(summaries, time.perf_counter() - start, self._backends)
