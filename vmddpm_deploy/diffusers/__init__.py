"""diffusers interop: our denoiser as a diffusers model, and diffusers' schedulers as our samplers.

* :class:`VMDDPMModel` (:mod:`.model`): ``ModelMixin`` + ``ConfigMixin`` around the denoiser, so
  ``save_pretrained`` / ``from_pretrained`` and diffusers' ``DDIMPipeline`` / ``DDPMPipeline`` run it.
* :class:`DiffusersScheduler` (:mod:`.scheduler`): any deterministic diffusers scheduler behind our
  ``Sampler`` protocol (``sample --scheduler diffusers:NAME``).

diffusers is an optional extra (``pip install 'vmddpm-deploy[diffusers]'``): this package imports
without it, and :func:`require_diffusers` names the extra in the one-line error (exit 9) of
whatever needs it. The classes are loaded on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from vmddpm_deploy.errors import BackendUnavailableError

__all__ = ["DiffusersScheduler", "VMDDPMModel", "diffusers_sampler", "require_diffusers"]

_LAZY = {
    "VMDDPMModel": "vmddpm_deploy.diffusers.model",
    "DiffusersScheduler": "vmddpm_deploy.diffusers.scheduler",
    "diffusers_sampler": "vmddpm_deploy.diffusers.scheduler",
}


def require_diffusers(what: str) -> None:
    """BackendUnavailableError (exit 9) naming ``what`` when diffusers is not installed."""
    if importlib.util.find_spec("diffusers") is None:
        raise BackendUnavailableError(
            f"{what} needs diffusers, which is not installed: pip install 'vmddpm-deploy[diffusers]'"
        )


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_diffusers(f"vmddpm_deploy.diffusers.{name}")
    return getattr(importlib.import_module(_LAZY[name]), name)
