"""A training run as a user asks for it (the ``train`` command): which settings and model a call
trains with, loading the data, the first Ctrl-C as a request to stop, and the run's summary.

The rules of ``--resume``: settings not given are the run's own (its ``steps``, checkpoint and
sample-grid cadence too, which a resumed run may change), the data is the run's unless ``--data``
is given (the images must be the same either way), and the model is the run's unless a preset,
scan order or config file is given (then it must equal the run's).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vmddpm_deploy.data import ImageDataset, LoadOptions, load_dataset
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import ConfigError, InvalidArgumentError
from vmddpm_deploy.model import ModelConfig, preset
from vmddpm_deploy.model.config import DEFAULT_PRESET_NAME, PRESETS
from vmddpm_deploy.training.loop import TrainResult, train
from vmddpm_deploy.training.run_files import load_train_state, loss_log_path, saved_data, saved_run
from vmddpm_deploy.training.settings import TrainSettings

DEFAULT_STEPS = 10000  # of a new run; a resumed run continues to its own total unless steps are given
LOSS_SMOOTHING = 0.98  # weight of the previous smoothed loss in the progress display's average
RECENT_STEPS = 100  # the summary's mean loss is over this many last steps


@dataclass(frozen=True)
class TrainRequest:
    """What to train, on what, and where; ``None`` fields were not given (see the module docstring)."""

    data: str | None  # a folder, one file, or "bundled" (see load_dataset); None: the resumed run's
    output: Path
    device: torch.device
    load_options: LoadOptions
    given_settings: dict[str, Any] = field(default_factory=dict)  # TrainSettings fields, None: not given
    preset: str | None = None
    scan_order: str | None = None
    config_file: Path | None = None  # JSON of ModelConfig fields applied over the preset
    schedule: str | None = None  # noise schedule kind of a new run
    resume: bool = False
    force: bool = False


class TrainProgress:
    """What :func:`run_request` reports as it goes; here each report is ignored, front ends override."""

    def file_read(self, done: int, total: int) -> None:
        """``done`` of the data's ``total`` files are read."""

    def loading_ended(self, dataset: ImageDataset | None) -> None:
        """The data load is over: ``dataset``, or ``None`` when it failed."""

    def step_done(self, step: int, total: int, smoothed_loss: float) -> None:
        """Step ``step`` (1-based) of ``total`` is taken; ``smoothed_loss`` is a running average."""

    def training_ended(self) -> None:
        """The run is over, finished, stopped or failed."""

    def stop_requested(self) -> None:
        """A Ctrl-C asked to stop: the run finishes this step and writes a checkpoint."""

    def note(self, message: str) -> None:
        """Something worth knowing that does not stop the run (e.g. the data are resized)."""


@dataclass(frozen=True)
class TrainReport:
    """How a request went."""

    output: Path
    result: TrainResult
    settings: TrainSettings
    device: torch.device
    images: int  # in the dataset trained on

    @property
    def recent_losses(self) -> list[float]:
        return self.result.losses[-RECENT_STEPS:]

    @property
    def recent_mean_loss(self) -> float | None:
        recent = self.recent_losses
        return sum(recent) / len(recent) if recent else None

    def summary(self) -> dict[str, Any]:
        """One JSON-able line of what was done."""
        return {
            "output": str(self.output),
            "loss_log": str(loss_log_path(self.output)),
            "steps": self.result.steps_done,
            "steps_run": self.result.steps_run,
            "seconds": round(self.result.seconds, 3),
            "ms_per_step": round(self.result.ms_per_step, 2),
            "loss_last100": self.recent_mean_loss,
            "device": str(self.device),
            "batch_size": self.settings.batch_size,
            "images": self.images,
            "stopped": self.result.stopped,
            "sample_grids": [str(path) for path in self.result.grids],
            "sample_grid_seconds": round(self.result.grid_seconds, 3),
        }


def run_request(request: TrainRequest, progress: TrainProgress | None = None) -> TrainReport:
    """Train as ``request`` asks, reporting to ``progress``. While it runs, a first Ctrl-C (SIGINT)
    ends the run after the current step with a checkpoint; a second one interrupts at once."""
    progress = progress or TrainProgress()
    state = load_train_state(request.output) if request.resume else None  # read once, for both uses below
    settings, saved_config = request_settings(request, state)
    config = request_model_config(request, saved_config)
    schedule = NoiseSchedule(kind=request.schedule) if request.schedule is not None else None
    data = request_data(request, state)
    loaded: list[ImageDataset] = []

    def load(image_size: int) -> ImageDataset:
        dataset = None
        try:
            dataset = load_dataset(data, image_size, request.load_options, on_file=progress.file_read)
        finally:
            progress.loading_ended(dataset)
        note = resize_note(dataset, image_size)
        if note:
            progress.note(note)
        loaded.append(dataset)
        return dataset

    smoothed: list[float] = []

    def on_step(step: int, loss: float) -> None:
        smoothed.append(loss if not smoothed else LOSS_SMOOTHING * smoothed[-1] + (1 - LOSS_SMOOTHING) * loss)
        progress.step_done(step, settings.steps, smoothed[-1])

    with _first_interrupt_requests_stop(progress.stop_requested) as stop_was_requested:
        try:
            result = train(
                load, request.output, settings, config, schedule, device=request.device, resume=request.resume,
                state=state, force=request.force, on_step=on_step, should_stop=stop_was_requested,
            )
        finally:
            progress.training_ended()
    return TrainReport(request.output, result, settings, request.device, len(loaded[0]))


def request_data(request: TrainRequest, state: dict[str, Any] | None) -> str:
    """``--data``, or under ``resume`` without it the data the run was trained on."""
    if request.data is not None:
        return request.data
    if not request.resume:
        raise InvalidArgumentError("a new training run needs --data (a folder, one file, or bundled)")
    return saved_data(request.output, state)


def resize_note(dataset: ImageDataset, image_size: int) -> str | None:
    """One line when the data's images are not at the model's resolution (they are resized to it),
    naming the preset that trains at theirs, if one does."""
    if not dataset.source_sizes or dataset.source_sizes[0] == (image_size, image_size):
        return None
    height, width = dataset.source_sizes[0]
    text = f"the images are {height}x{width}, the model {image_size}x{image_size}: every image is resized to it"
    fitting = [name for name, config in PRESETS.items() if config.image_size == max(height, width)]
    side = max(height, width)
    return text + (f"; --preset {fitting[0]} trains at {side}x{side}" if fitting else "")


def request_settings(request: TrainRequest, state: dict[str, Any] | None) -> tuple[TrainSettings, ModelConfig | None]:
    """The settings a request trains with and, under ``resume``, the run's model config: the given
    settings over the run's own (``state``, the run's train state) or over the defaults."""
    given = {name: value for name, value in request.given_settings.items() if value is not None}
    base, saved_config = saved_run(request.output, state) if state is not None else ({"steps": DEFAULT_STEPS}, None)
    return TrainSettings(**(base | given)), saved_config


def request_model_config(request: TrainRequest, saved_config: ModelConfig | None) -> ModelConfig | None:
    """The model a request trains: a resumed run's ``saved_config`` when no model option is given,
    else the preset with the scan order and the config file's fields over it."""
    if request.resume and request.preset is None and request.scan_order is None and request.config_file is None:
        return saved_config
    fields = {"scan_order": request.scan_order or ModelConfig.scan_order} | read_config_file(request.config_file)
    return ModelConfig.from_dict(preset(request.preset or DEFAULT_PRESET_NAME).to_dict() | fields)


def read_config_file(path: Path | None) -> dict[str, Any]:
    """The ModelConfig fields in the JSON file ``path`` (none for ``None``)."""
    if path is None:
        return {}
    try:
        fields = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--config {path} is not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of ModelConfig fields")
    return fields


@contextmanager
def _first_interrupt_requests_stop(on_request: Callable[[], None]) -> Iterator[Callable[[], bool]]:
    """Within the block, the first SIGINT only records a request (polled by the yielded function)."""
    requested: list[bool] = []

    def request_stop(signum, frame):
        requested.append(True)
        signal.signal(signal.SIGINT, previous_handler)  # a second Ctrl-C interrupts at once
        on_request()

    previous_handler = signal.signal(signal.SIGINT, request_stop)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
