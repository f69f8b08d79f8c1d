"""TensorRT and the GPU it runs on: found lazily, with one-line errors when either is missing.

Nothing here imports ``tensorrt`` at module import time, so the package works (and says what is
missing) on machines without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from vmddpm_deploy.errors import BackendUnavailableError

INSTALL_HINT = "install it with `pip install 'vmddpm-deploy[tensorrt]'` on a machine with an NVIDIA GPU"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module; BackendUnavailableError when it is not installed or cannot load."""
    try:
        import tensorrt
    except ImportError as exc:
        if getattr(exc, "name", None) == "tensorrt":
            raise BackendUnavailableError(f"TensorRT is not installed (no `tensorrt` module); {INSTALL_HINT}") from None
        raise BackendUnavailableError(f"TensorRT is installed but cannot be imported ({exc}); {INSTALL_HINT}") from None
    except OSError as exc:  # the bindings are there, libnvinfer is not
        raise BackendUnavailableError(f"TensorRT's libraries cannot be loaded ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def short_version(version: str) -> str:
    """``"10.14.1.48"`` -> ``"10.14"``: the part engine file names carry."""
    return ".".join(version.split(".")[:2])


@dataclass(frozen=True)
class Gpu:
    """The CUDA device an engine is built for or runs on."""

    index: int
    name: str
    compute_capability: str  # "9.0"

    @property
    def sm(self) -> str:
        """``"sm90"``: the compute capability as engine file names carry it."""
        return "sm" + self.compute_capability.replace(".", "")


def cuda_gpu(device: str | None = None) -> Gpu:
    """The CUDA device ``device`` names (default: the current one); BackendUnavailableError without one."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise BackendUnavailableError(
            f"no CUDA GPU is visible to PyTorch ({torch.__version__}, {build}); TensorRT engines need an NVIDIA GPU"
        )
    target = torch.device(device) if device is not None else torch.device("cuda")
    if target.type != "cuda":
        target = torch.device("cuda")
    index = target.index if target.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"no CUDA device {index}: this machine has {torch.cuda.device_count()}")
    properties = torch.cuda.get_device_properties(index)
    return Gpu(index, properties.name, f"{properties.major}.{properties.minor}")
