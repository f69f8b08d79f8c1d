"""The files of a training run beside its checkpoint (see :mod:`vmddpm_deploy.training`):
where they are, reading the train state back, and whether a new run may write there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmddpm_deploy.checkpoint import load_weights_only
from vmddpm_deploy.errors import CheckpointError, ConfigError, OutputError
from vmddpm_deploy.model import ModelConfig

TRAIN_STATE_FORMAT = "vmddpm-deploy-train-state/1"


def train_state_path(output: Path) -> Path:
    return output.with_name(output.name + ".train-state")


def loss_log_path(output: Path) -> Path:
    return output.with_name(output.name + ".loss.csv")


def samples_dir(output: Path) -> Path:
    return output.with_name(output.stem + ".samples")



def saved_run(output: Path, state: dict[str, Any]) -> tuple[dict[str, Any], ModelConfig]:
    """The settings and model config in ``state`` (``output``'s train state, read by
    :func:`load_train_state`), so ``--resume`` need not repeat them."""
    path = train_state_path(Path(output))
    try:
        return dict(state["settings"]), ModelConfig.from_dict(state["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def saved_data(output: Path, state: dict[str, Any]) -> str:
    """The ``--data`` the run in ``output`` was trained on, read from its train ``state`` (see
    :func:`load_train_state`), so ``--resume`` need not repeat it."""
    source = (state.get("data") or {}).get("source")
    if not isinstance(source, str):
        raise CheckpointError(f"{train_state_path(Path(output))} does not say which data the run used; pass --data")
    return source


def check_new_output(output: Path, force: bool) -> None:
    """OutputError unless ``output`` can start a new run (free, or ``force`` to replace a run)."""
    if output.is_dir():
        raise OutputError(f"{output} is a directory; give a file name such as {output / 'ckpt.safetensors'}")
    blocker = next((parent for parent in output.parents if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():  # checked here, before a long data load
        raise OutputError(f"cannot create {output.parent}: {blocker} is a file, not a directory")
    existing = [p for p in (output, train_state_path(output)) if p.exists()]
    if existing and not force:
        raise OutputError(f"{existing[0]} already exists; pass --resume to continue that run or --force to start over")


def load_train_state(output: Path) -> dict[str, Any]:
    """The train state beside ``output``; CheckpointError when it is missing or unreadable."""
    path = train_state_path(output)
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {path} not found (it is written beside {output.name} at every checkpoint)"
        )
    state = load_weights_only(path, "train state")
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a {TRAIN_STATE_FORMAT} train state")
    return state

