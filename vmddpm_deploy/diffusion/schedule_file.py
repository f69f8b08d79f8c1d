"""The timestep schedule file ``tune-schedule`` writes and ``sample --timesteps`` / ``export
--timesteps`` read: plain JSON.

    {"format": "vmddpm-deploy-timesteps/1", "timesteps": [990, 700, ...], "nfe": 8,
     "num_train_timesteps": 1000, "source_sha256": "...", "teacher": {...}, "trajectories": 128,
     "seed": 0, "precision": "fp32", "cost": ..., "final_mse": ...}

``timesteps`` are what a sampler visits, descending; ``source_sha256`` is the SRC they were tuned
for; ``cost`` is the search's summed one-step error and ``final_mse`` the tuned DDIM's mean squared
difference from the teacher's final images (``diffusion/schedule_search.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.errors import InvalidArgumentError, OutputError

SCHEDULE_FORMAT = "vmddpm-deploy-timesteps/1"


@dataclass(frozen=True)
class TunedSchedule:
    timesteps: tuple[int, ...]
    num_train_timesteps: int
    source_sha256: str
    #: How the teacher ran: sampler, steps, spacing (its grid is where the timesteps were chosen from).
    teacher: dict[str, Any] = field(default_factory=dict)
    trajectories: int = 0
    seed: int = 0
    precision: str = "fp32"
    cost: float = 0.0
    final_mse: float | None = None

    @property
    def nfe(self) -> int:
        return len(self.timesteps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timesteps"] = list(self.timesteps)
        return {"format": SCHEDULE_FORMAT, "nfe": self.nfe, **data}

    def write(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write atomically; an existing ``path`` is refused unless ``force``."""
        path = Path(path)
        if path.is_dir():
            raise OutputError(f"{path} is a directory; give a file name for the schedule")
        if path.exists() and not force:
            raise OutputError(f"{path} exists; use --force to replace it or choose another -o")
        data = (json.dumps(self.to_dict(), indent=2) + "\n").encode()
        return write_atomic(path, lambda handle: handle.write(data))


def read_schedule(path: str | os.PathLike) -> TunedSchedule:
    """A schedule file, checked: its format tag, ``nfe`` distinct descending integer timesteps in
    ``[0, num_train_timesteps - 1]``, a sha256. Anything else is one InvalidArgumentError line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"--timesteps {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"--timesteps {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--timesteps {path} is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict) or data.get("format") != SCHEDULE_FORMAT:
        raise InvalidArgumentError(
            f"--timesteps {path} is not a {SCHEDULE_FORMAT} file (make one with vmddpm-deploy tune-schedule)"
        )
    T = data.get("num_train_timesteps")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise InvalidArgumentError(f"--timesteps {path}: num_train_timesteps must be a positive integer, got {T!r}")
    timesteps = data.get("timesteps")
    if not isinstance(timesteps, list):
        raise InvalidArgumentError(f"--timesteps {path}: timesteps must be a list, got {type(timesteps).__name__}")
    from vmddpm_deploy.diffusion.schedule import check_timesteps

    try:
        checked = check_timesteps(T, timesteps)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"--timesteps {path}: {exc}") from None
    if data.get("nfe") != len(checked):
        raise InvalidArgumentError(f"--timesteps {path}: nfe is {data.get('nfe')!r} but it lists {len(checked)} timesteps")
    sha256 = data.get("source_sha256")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InvalidArgumentError(f"--timesteps {path}: source_sha256 must be a sha256 in hex, got {sha256!r}")
    known = {name for name in TunedSchedule.__dataclass_fields__} | {"format", "nfe"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgumentError(f"--timesteps {path}: unknown field(s) {', '.join(unknown)}")
    values = {key: value for key, value in data.items() if key not in ("format", "nfe")}
    values["timesteps"] = checked
    return TunedSchedule(**values)
