"""Diffusion: the noise schedule, per-sample noise, and samplers that take any Denoiser.

Samplers are immutable functions of the schedule (:mod:`.ddpm`, :mod:`.ddim`, :mod:`.ddim_multistep`,
:mod:`.dpm_solver`);
:func:`run_sampler` drives one with a ``Denoiser(x, t) -> eps`` (docs/design.md section 4), and
:func:`gaussian_noise` makes sample ``i``'s noise independent of the batch it is drawn in.
diffusers' schedulers are the test oracle (tests/diffusion/test_samplers_vs_diffusers.py).
"""

from vmddpm_deploy.diffusion.ddim import DDIMSampler
from vmddpm_deploy.diffusion.ddim_multistep import MultistepDDIMSampler
from vmddpm_deploy.diffusion.ddpm import DDPMSampler
from vmddpm_deploy.diffusion.denoiser import Denoiser
from vmddpm_deploy.diffusion.dpm_solver import DPMSolverPP2MSampler, dpm_solver_timesteps
from vmddpm_deploy.diffusion.noise import gaussian_noise, splitmix64
from vmddpm_deploy.diffusion.reverse_process import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS,
    Sampler,
    make_sampler,
    run_sampler,
)
from vmddpm_deploy.diffusion.schedule import TIMESTEP_SPACINGS, NoiseSchedule, spaced_timesteps

__all__ = [
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "SAMPLERS",
    "TIMESTEP_SPACINGS",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPP2MSampler",
    "MultistepDDIMSampler",
    "Denoiser",
    "NoiseSchedule",
    "Sampler",
    "dpm_solver_timesteps",
    "gaussian_noise",
    "make_sampler",
    "run_sampler",
    "spaced_timesteps",
    "splitmix64",
]
