"""Sample quality: FID, KID and precision / recall / density / coverage with the standard InceptionV3
feature extractor, offline, and a memorization report (nearest training images, calibrated).

``evaluate_sets(open_image_set("samples/"), open_image_set("bundled:heldout", 32))`` extracts
2048-d pool3 features of both sets (:mod:`.inception`, cached per set by :mod:`.features`) and
computes the Frechet Inception Distance (:mod:`.fid`), the Kernel Inception Distance (:mod:`.kid`)
and PRDC (:mod:`.prdc`). :mod:`.memorization` finds each generated image's nearest training image.
:mod:`.image_sets` says which folders and files can be compared.
"""

from vmddpm_deploy.evaluation.fid import FeatureStatistics, frechet_distance
from vmddpm_deploy.evaluation.image_sets import ImageSet, images_to_uint8, open_image_set, require_same_shape
from vmddpm_deploy.evaluation.inception import (
    EXTRACTOR_NAME,
    EXTRACTOR_SHA256,
    INSTALL_HINT,
    InceptionFeatureExtractor,
    locate_extractor,
)
from vmddpm_deploy.evaluation.kid import kernel_inception_distance, mmd2_unbiased
from vmddpm_deploy.evaluation.metrics import (
    FID_RECOMMENDED_IMAGES,
    METRICS,
    Evaluation,
    check_counts,
    evaluate_sets,
    parse_metrics,
    require_images,
)

__all__ = [
    "EXTRACTOR_NAME",
    "EXTRACTOR_SHA256",
    "FID_RECOMMENDED_IMAGES",
    "INSTALL_HINT",
    "METRICS",
    "Evaluation",
    "FeatureStatistics",
    "ImageSet",
    "InceptionFeatureExtractor",
    "check_counts",
    "evaluate_sets",
    "frechet_distance",
    "images_to_uint8",
    "kernel_inception_distance",
    "locate_extractor",
    "mmd2_unbiased",
    "open_image_set",
    "parse_metrics",
    "require_images",
    "require_same_shape",
]
