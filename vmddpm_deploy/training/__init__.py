"""Training a VM-DDPM denoiser: epsilon prediction, AdamW, EMA, clipping, exact resume.

Objective (Ho et al. 2020, eq. 14, "L_simple"): for an image ``x_0``, ``t ~ U{0..T-1}`` and
``eps ~ N(0, I)``, form ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` (eq. 4) and
minimise ``|| eps - eps_theta(x_t, t) ||^2``, averaged over pixels and batch.

Files of a run with ``-o ckpt.safetensors``::

    ckpt.safetensors              the checkpoint (vmddpm_deploy.checkpoint): config, schedule, raw and EMA weights
    ckpt.safetensors.train-state  everything needed to continue: weights, EMA, AdamW state, step,
                                  per-step losses, settings, data fingerprint (torch.load(weights_only=True))
    ckpt.safetensors.loss.csv     step,loss: one row per step, for a loss-curve plot
    ckpt.samples/step_NNNNNNN.png  optional 4x4 grid of EMA samples (8-bit preview PNG), every K steps

All three are rewritten atomically at every checkpoint, the train state first: a crash at any
moment leaves a train state that ``--resume`` continues exactly. Every random draw of step ``k``
(images, flips, timesteps, noise, dropout masks) is a function of ``(seed, k)``
(:mod:`vmddpm_deploy.data.batches`), so a resumed run reproduces the loss curve of an
uninterrupted one.
"""

from vmddpm_deploy.training.loop import TrainResult, train
from vmddpm_deploy.training.request import TrainProgress, TrainReport, TrainRequest, run_request
from vmddpm_deploy.training.run_files import check_new_output, loss_log_path, samples_dir, saved_run, train_state_path
from vmddpm_deploy.training.settings import TrainSettings

__all__ = [
    "TrainProgress",
    "TrainReport",
    "TrainRequest",
    "TrainResult",
    "TrainSettings",
    "check_new_output",
    "loss_log_path",
    "run_request",
    "samples_dir",
    "saved_run",
    "train",
    "train_state_path",
]
