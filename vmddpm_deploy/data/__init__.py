"""Training data: medical image files (PNG/JPEG/TIFF, DICOM, NIfTI) and the bundled brain MRI set,
turned into in-memory 2-D slices at the model's resolution.

``load_dataset("path/to/ACDC", 32)`` detects the layout (:mod:`.layouts`), reads each file
(:mod:`.readers`), normalises, filters and resizes it (:mod:`.preprocess`) and returns an
:class:`ImageDataset`; ``load_dataset("bundled", 32)`` (or :func:`load_bundled`) needs no files.
:mod:`.batches` decides which images, flips, timesteps and noise a training step uses, as a pure
function of ``(seed, step)``.
"""

from vmddpm_deploy.data.bundled import BUNDLED_SPLITS, load_bundled
from vmddpm_deploy.data.dataset import LoadOptions, load_dataset
from vmddpm_deploy.data.image_dataset import ImageDataset
from vmddpm_deploy.data.layouts import BRATS_MODALITIES, CHESTXRAY_SPLITS, LAYOUTS
from vmddpm_deploy.data.preprocess import FIT_MODES, Intensity

__all__ = [
    "BRATS_MODALITIES",
    "BUNDLED_SPLITS",
    "CHESTXRAY_SPLITS",
    "FIT_MODES",
    "LAYOUTS",
    "ImageDataset",
    "Intensity",
    "LoadOptions",
    "load_bundled",
    "load_dataset",
]
