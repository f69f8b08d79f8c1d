"""The training loop: one optimiser step at a time, checkpoints, sample grids, exact resume."""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vmddpm_deploy.atomic_write import remove_stale_temporaries, write_atomic
from vmddpm_deploy.checkpoint import Checkpoint, init_checkpoint, save_checkpoint
from vmddpm_deploy.data.batches import step_draws, stream_seed
from vmddpm_deploy.data.image_dataset import ImageDataset
from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler
from vmddpm_deploy.errors import CheckpointError, ConfigError, DataError, InvalidArgumentError, OutputError
from vmddpm_deploy.model import VMDDPM, ModelConfig
from vmddpm_deploy.outputs import write_image_grid
from vmddpm_deploy.generation import generate
from vmddpm_deploy.training.run_files import (
    TRAIN_STATE_FORMAT,
    check_new_output,
    load_train_state,
    loss_log_path,
    samples_dir,
    train_state_path,
)
from vmddpm_deploy.training.settings import TrainSettings, resume_changes

_DROPOUT_STREAM = 2
SAMPLE_GRID = 4  # the sample grid is SAMPLE_GRID x SAMPLE_GRID EMA samples


@dataclass(frozen=True)
class TrainResult:
    steps_done: int  # the run's total step count now
    steps_run: int  # steps taken by this call
    losses: list[float]  # the whole run's per-step losses
    seconds: float  # time in this call's steps (no checkpoint / sample writing)
    stopped: bool  # ended early by should_stop
    grids: tuple[Path, ...] = ()  # sample grids written by this call
    grid_seconds: float = 0.0  # time spent sampling and writing them

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / max(self.steps_run, 1)


def train(
    dataset: ImageDataset | Callable[[int], ImageDataset],
    output: Path,
    settings: TrainSettings,
    config: ModelConfig | None = None,
    schedule: NoiseSchedule | None = None,
    *,
    device: str | torch.device = "cpu",
    resume: bool = False,
    state: dict[str, Any] | None = None,
    force: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on ``dataset`` up to ``settings.steps`` steps, checkpointing to ``output``.

    ``dataset`` may be a loader ``image_size -> ImageDataset``, called once the run's settings
    are known to be valid, so a long data load never precedes a refusal. A new run needs
    ``config`` (and takes ``schedule`` or the default linear one); a resumed run reads both from
    ``output``'s train state (``state`` when the caller has read it already) and refuses a
    different config, schedule, hyperparameter or dataset. ``on_step(step, loss)`` runs after
    every step (1-based); ``should_stop()`` is polled after every step and ends the run with a
    checkpoint.
    """
    output = Path(output)
    device = torch.device(device)
    if settings.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidArgumentError("--amp uses bfloat16, which this GPU does not support; drop --amp")
    if not resume:
        state = None
    elif state is None:
        state = load_train_state(output)
    if state is None:
        if config is None:
            raise InvalidArgumentError("a new training run needs a model config (--preset or --config)")
        schedule = schedule or NoiseSchedule()
        check_new_output(output, force)
    else:
        config, schedule = _check_same_run(state, config, schedule, settings, output)
        if len(state["losses"]) > settings.steps:
            raise InvalidArgumentError(
                f"the run being resumed is already at step {len(state['losses'])}; --steps must be at least that"
            )
    # Made now, so that grid settings the schedule cannot take fail before a long data load.
    grid_sampler = make_sampler(settings.sample_sampler, schedule, settings.sample_steps) if settings.sample_every else None
    if not isinstance(dataset, ImageDataset):
        dataset = dataset(config.image_size)
    if config.in_channels != dataset.images.shape[1]:
        raise ConfigError(f"the model takes {config.in_channels} channels; the data has {dataset.images.shape[1]}")
    if config.image_size != dataset.image_size:
        raise DataError(
            f"the data is {dataset.image_size}x{dataset.image_size}, the model {config.image_size}x"
            f"{config.image_size}; load it at the model's size"
        )
    if state is not None and state["data"]["fingerprint"] != dataset.fingerprint():
        saved = state["data"]
        raise DataError(
            f"--resume: the data differ from the run's ({saved['images']} images from {saved['source']}, "
            f"now {len(dataset)} from {dataset.source}); point --data and its options at the same images"
        )

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {output.parent}: {exc.strerror or exc}") from None
    for path in (train_state_path(output), output, loss_log_path(output)):
        remove_stale_temporaries(path)  # what a kill -9 during an earlier checkpoint write left

    run = _Run(config, schedule, dataset, settings, device)
    if state is None:
        run.model.load_state_dict(init_checkpoint(config, schedule, seed=settings.seed).model)
        run.ema.load_state_dict(run.model.state_dict())
    else:
        run.restore(state)
    start = len(run.losses)

    stopped, seconds, grids, grid_seconds = False, 0.0, [], 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for step in range(start, settings.steps):
            began = time.perf_counter()
            loss = run.step(step)
            seconds += time.perf_counter() - began
            done = step + 1
            stopped = should_stop is not None and should_stop()
            if done % settings.checkpoint_every == 0 or done == settings.steps or stopped:
                run.save(output)
            if grid_sampler is not None and done % settings.sample_every == 0:
                began = time.perf_counter()
                grids.append(run.write_sample_grid(samples_dir(output) / f"step_{done:07d}.png", grid_sampler))
                grid_seconds += time.perf_counter() - began
            if on_step is not None:
                on_step(done, loss)
            if stopped:
                break
    if start == settings.steps and state is not None:
        run.save(output)  # nothing to add, but make sure ckpt.safetensors and the log match the state
    return TrainResult(
        len(run.losses), len(run.losses) - start, list(run.losses), seconds, stopped, tuple(grids), grid_seconds
    )


class _Run:
    """The mutable state of one training run on one device."""

    def __init__(
        self, config: ModelConfig, schedule: NoiseSchedule, dataset: ImageDataset, settings: TrainSettings,
        device: torch.device,
    ):
        self.config, self.schedule, self.dataset, self.settings, self.device = (
            config, schedule, dataset, settings, device,
        )
        self.model = VMDDPM(config).to(device).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay
        )
        alphas_cumprod = schedule.alphas_cumprod  # float64: take the roots before rounding to fp32
        self.sqrt_ab = alphas_cumprod.sqrt().float().to(device)
        self.sqrt_one_minus_ab = (1.0 - alphas_cumprod).sqrt().float().to(device)
        self.losses: list[float] = []
        self.image_shape = (config.in_channels, config.image_size, config.image_size)

    def step(self, step: int) -> float:
        settings = self.settings
        draws = step_draws(
            settings.seed, step, settings.batch_size, len(self.dataset), self.image_shape,
            self.schedule.num_train_timesteps,
        )
        x0 = self.dataset.batch(draws.indices)
        if settings.hflip:
            x0 = torch.where(draws.hflip[:, None, None, None], x0.flip(-1), x0)
        x0, noise, t = (v.to(self.device, non_blocking=True) for v in (x0, draws.noise, draws.t))
        # q(x_t | x_0) by reparameterisation (Ho et al. eq. 4).
        x_t = self.sqrt_ab[t, None, None, None] * x0 + self.sqrt_one_minus_ab[t, None, None, None] * noise
        torch.manual_seed(stream_seed(settings.seed, _DROPOUT_STREAM, step))  # dropout masks
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=settings.amp):
            eps = self.model(x_t, t)
        loss = F.mse_loss(eps.float(), noise)  # L_simple (Ho et al. eq. 14)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = settings.lr_at(step)
        self.optimizer.step()
        with torch.no_grad():
            decay = settings.ema_decay_at(step)
            ema_params, params = list(self.ema.parameters()), list(self.model.parameters())
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema <- decay * ema + (1 - decay) * theta
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"the loss became {value} at step {step + 1}; lower --lr or keep --grad-clip, and --resume "
                f"from the last checkpoint"
            )
        self.losses.append(value)
        return value

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.losses = [float(v) for v in state["losses"].tolist()]

    def save(self, output: Path) -> None:
        def cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

        model, ema = cpu(self.model), cpu(self.ema)
        state = {
            "format": TRAIN_STATE_FORMAT,
            "step": len(self.losses),
            "settings": asdict(self.settings),
            "config": self.config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "data": {"source": self.dataset.source, "fingerprint": self.dataset.fingerprint(),
                     "images": len(self.dataset)},
            "model": model,
            "ema": ema,
            "optimizer": self.optimizer.state_dict(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
        }
        write_atomic(train_state_path(output), lambda handle: torch.save(state, handle))
        save_checkpoint(Checkpoint(self.config, self.schedule, model, ema), output)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["step", "loss"])
        writer.writerows((k + 1, f"{loss:.6g}") for k, loss in enumerate(self.losses))
        write_atomic(loss_log_path(output), lambda handle: handle.write(text.getvalue().encode()))

    def write_sample_grid(self, path: Path, sampler) -> Path:
        """SAMPLE_GRID^2 EMA samples (fixed seed 0, so grids of different steps compare) as an 8-bit
        PNG with gaps between the tiles: a preview to look at (``sample`` writes the 16-bit data)."""
        count = SAMPLE_GRID * SAMPLE_GRID
        images = torch.cat([x for _, x in generate(self.ema, sampler, 0, range(count), self.image_shape, count,
                                                   self.device)])
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_image_grid(path, images.float().cpu().numpy())


def _check_same_run(
    state: dict[str, Any], config: ModelConfig | None, schedule: NoiseSchedule | None, settings: TrainSettings,
    output: Path,
) -> tuple[ModelConfig, NoiseSchedule]:
    try:
        saved_config = ModelConfig.from_dict(state["config"])
        saved_schedule = NoiseSchedule.from_dict(state["schedule"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{train_state_path(output)}: {exc}") from None
    if config is not None and config != saved_config:
        changed = [f.name for f in fields(ModelConfig) if getattr(config, f.name) != getattr(saved_config, f.name)]
        raise InvalidArgumentError(f"--resume: the model config differs from the run's ({', '.join(changed)})")
    if schedule is not None and schedule != saved_schedule:
        raise InvalidArgumentError("--resume: the noise schedule differs from the run's")
    changed = resume_changes(state["settings"], settings)
    if changed:
        raise InvalidArgumentError(f"--resume needs the run's settings; changed: {', '.join(changed)}")
    return saved_config, saved_schedule
