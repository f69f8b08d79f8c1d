"""What a sampling job is, as plain data: its shard, the settings that determine its images, and
the summary it reports (one schema for a shard, a whole job and a Ray run)."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.arithmetic import Arithmetic


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise InvalidArgumentError(f"--shard must look like I/N (e.g. 0/4), got {text!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 0 <= index < count:
            raise InvalidArgumentError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    def indices(self, n: int) -> range:
        return range(self.index, n, self.count)

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


@dataclass(frozen=True)
class JobSettings:
    """Everything that determines the images, and how the job is cut up.

    ``--resume`` refuses if anything but ``batch_size`` changed, and a shard sharing a directory
    if anything but ``shard`` and ``batch_size`` differs: the images depend on neither, only on
    ``arithmetic.micro_batch`` (:mod:`vmddpm_deploy.generation`), which is the batch size on a GPU
    and fixed on the CPU. ``batch_size`` None means "the backend's default" and ``arithmetic`` None
    "not known yet": :func:`vmddpm_deploy.jobs.prepare.prepare_job` resolves both, where the
    denoiser is loaded, before anything runs. ``scheduler`` is a diffusers scheduler's class,
    diffusers version and full config (:attr:`vmddpm_deploy.diffusers.DiffusersScheduler.spec`)
    when one replaces ``sampler`` (which then reads ``diffusers:<class>``).
    ``spacing`` None is the sampler's default placement, resolved by
    :func:`~vmddpm_deploy.jobs.prepare.plan_job`; ``precision`` ``auto`` (what ``sample`` asks
    for by default) is resolved where the denoiser loads (fp32 or bf16 on the torch backend, fp32
    on the others), so both are recorded as the values that made the images. ``timesteps``: explicit
    timesteps (``sample --timesteps``, a ``tune-schedule`` file's) in place of ``spacing``, which is
    then None.
    """

    source_sha256: str
    n: int
    sampler: str
    steps: int
    eta: float
    seed: int
    image_format: str
    shard: Shard
    batch_size: int | None = None
    scheduler: dict[str, Any] | None = None
    spacing: str | None = None
    precision: str = "fp32"
    timesteps: tuple[int, ...] | None = None
    arithmetic: Arithmetic | None = None

    #: Settings that say how the job is cut up, not what its images are.
    SCHEDULING = ("shard", "batch_size")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shard"] = f"{self.shard.index}/{self.shard.count}"
        # A list, as JSON reads it back, so a recorded and a wanted run compare equal.
        data["timesteps"] = None if self.timesteps is None else list(self.timesteps)
        return data


def setting_difference(key: str, recorded: Any, wanted: Any) -> tuple[str, Any, Any]:
    """The innermost differing entry of two values of setting ``key`` as (dotted key, recorded,
    wanted), so that a scheduler config of thirty entries that differs in one names that one
    (``scheduler.config.thresholding``, True, False)."""
    while isinstance(recorded, dict) and isinstance(wanted, dict):
        inner = next((k for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)), None)
        if inner is None:
            break
        key, recorded, wanted = f"{key}.{inner}", recorded.get(inner), wanted.get(inner)
    return key, recorded, wanted


#: Each setting of :class:`JobSettings` by the name the user gives it, most telling first: another
#: SRC, count or format makes another job; the sampler's settings other images; the split and batch
#: size are how the job is run. A diffusers scheduler's config is named down to the entry that differs.
SETTING_OPTIONS = {
    "source_sha256": "SRC", "n": "--n", "image_format": "--format", "sampler": "--sampler", "steps": "--steps",
    "spacing": "--spacing", "timesteps": "--timesteps", "scheduler": "scheduler", "eta": "--eta", "seed": "--seed",
    "precision": "--precision", "arithmetic": "arithmetic", "shard": "--shard", "batch_size": "--batch-size",
}


def describe_changes(recorded: dict[str, Any], wanted: dict[str, Any], *, skip: tuple[str, ...] = ()) -> str:
    """Every setting that differs between two ``JobSettings.to_dict()``s, by option name and most
    telling first ("--n was 4, now 2; --format was png, now npz"); "" when none does."""
    known = [key for key in SETTING_OPTIONS if key in wanted]
    keys = known + sorted(key for key in wanted if key not in SETTING_OPTIONS)
    changes = []
    for key in keys:
        if key in skip or recorded.get(key) == wanted[key]:
            continue
        if key == "source_sha256":
            changes.append(f"SRC is another file (sha256 {str(recorded.get(key))[:12]}... then, {wanted[key][:12]}... now)")
            continue
        option, was, now = setting_difference(SETTING_OPTIONS.get(key, "--" + key.replace("_", "-")), recorded.get(key),
                                              wanted[key])
        changes.append(f"{option} was {was}, now {now}")
    return "; ".join(changes)


def job_summary(
    *, images: int, already_done: int, seconds: float, denoiser_calls: int, ms_per_denoiser_call: float,
    batch_size: int, padded_rows: int, **extra: Any,
) -> dict[str, Any]:
    """The summary a run reports (``samples.json``, ``--quiet``'s JSON line); ``extra``: e.g. workers."""
    return {
        "images": images,
        "already_done": already_done,
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 3) if seconds > 0 else None,
        "denoiser_calls": denoiser_calls,
        "ms_per_denoiser_call": round(ms_per_denoiser_call, 3),
        "batch_size": batch_size,
        "padded_rows": padded_rows,  # computed only to keep the call shape fixed (short micro-batches)
        **extra,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
