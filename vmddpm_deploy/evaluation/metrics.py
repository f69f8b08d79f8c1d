"""FID, KID and precision / recall / density / coverage between a generated and a real image set:
the library behind ``evaluate``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vmddpm_deploy.errors import DataError, InvalidArgumentError
from vmddpm_deploy.evaluation.features import extract_features
from vmddpm_deploy.evaluation.fid import FeatureStatistics, frechet_distance
from vmddpm_deploy.evaluation.image_sets import ImageSet, require_same_shape
from vmddpm_deploy.evaluation.inception import EXTRACTOR_NAME, EXTRACTOR_SHA256, InceptionFeatureExtractor
from vmddpm_deploy.evaluation.kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, kernel_inception_distance
from vmddpm_deploy.evaluation.prdc import DEFAULT_K, check_k, precision_recall_density_coverage

METRICS = ("fid", "kid", "prdc")
#: What `evaluate` and `evaluate_sets` compute unless told otherwise.
DEFAULT_METRICS = ("fid", "kid")
#: Below this many images per set the FID estimate is biased upward (the covariance of 2048-d
#: features is rank-deficient); numbers are then only comparable at equal n.
FID_RECOMMENDED_IMAGES = 2048


@dataclass(frozen=True)
class Evaluation:
    generated: str
    real: str
    n_generated: int
    n_real: int
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    kid_subsets: int | None = None
    kid_subset_size: int | None = None
    prdc: dict[str, float] | None = None  # precision, recall, density, coverage, k
    seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "generated": self.generated,
            "real": self.real,
            "n_generated": self.n_generated,
            "n_real": self.n_real,
            "extractor": {"name": EXTRACTOR_NAME, "sha256": EXTRACTOR_SHA256},
        }
        if self.fid is not None:
            data["fid"] = self.fid
        if self.kid is not None:
            data |= {
                "kid": self.kid,
                "kid_std": self.kid_std,
                "kid_subsets": self.kid_subsets,
                "kid_subset_size": self.kid_subset_size,
            }
        if self.prdc is not None:
            data["prdc"] = self.prdc
        return data | {"features_cached": self.cached, "seconds": self.seconds}


def parse_metrics(names: list[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise InvalidArgumentError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def require_images(generated: ImageSet, real: ImageSet, metrics: tuple[str, ...], k: int = DEFAULT_K) -> None:
    """Fail before minutes of feature extraction, not after, when a set is too small or the two
    sets hold images of different sizes or colour types."""
    require_same_shape(generated, real)
    for role, image_set in (("generated", generated), ("real", real)):
        if len(image_set) < 2:
            raise DataError(
                f"{'/'.join(name.upper() for name in metrics)} needs at least 2 images per set; "
                f"the {role} set {image_set.source} has {len(image_set)}"
            )
        if "prdc" in metrics and len(image_set) <= k:
            raise DataError(
                f"PRDC with --k {k} needs at least {k + 1} images per set; "
                f"the {role} set {image_set.source} has {len(image_set)}"
            )


def check_counts(
    batch_size: int, kid_subsets: int, kid_subset_size: int, metrics: Sequence[str] = ("kid",), k: int = DEFAULT_K
) -> None:
    """InvalidArgumentError for a count no evaluation can run with, before any features are extracted."""
    if "prdc" in metrics:
        check_k(k)
    if batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be at least 1, got {batch_size}")
    if "kid" in metrics and (kid_subsets < 1 or kid_subset_size < 2):
        raise InvalidArgumentError(
            f"KID needs --kid-subsets >= 1 and --kid-subset-size >= 2, got {kid_subsets} and {kid_subset_size}"
        )


def evaluate_sets(
    generated: ImageSet,
    real: ImageSet,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    *,
    extractor: InceptionFeatureExtractor | None = None,
    batch_size: int = 32,
    cache: bool = True,
    kid_subsets: int = DEFAULT_SUBSETS,
    kid_subset_size: int = DEFAULT_SUBSET_SIZE,
    k: int = DEFAULT_K,
    on_images: Callable[[int], None] | None = None,
) -> Evaluation:
    """Features of both sets (cached per set), then each metric in ``metrics``.

    ``on_images(k)`` reports feature-extraction progress in images (of ``len(generated) + len(real)``).
    """
    metrics = parse_metrics(list(metrics))
    check_counts(batch_size, kid_subsets, kid_subset_size, metrics, k)
    require_images(generated, real, metrics, k)
    extractor = extractor or InceptionFeatureExtractor()
    start = time.perf_counter()
    generated_features, generated_cached = extract_features(generated, extractor, batch_size, cache, on_images)
    real_features, real_cached = extract_features(real, extractor, batch_size, cache, on_images)
    extracted = time.perf_counter()
    results: dict[str, Any] = {}
    if "fid" in metrics:
        results["fid"] = frechet_distance(
            FeatureStatistics.of(generated_features, f"the generated set {generated.source}"),
            FeatureStatistics.of(real_features, f"the real set {real.source}"),
        )
    if "kid" in metrics:
        kid = kernel_inception_distance(generated_features, real_features, kid_subsets, kid_subset_size)
        results |= {"kid": kid.mean, "kid_std": kid.std, "kid_subsets": kid.subsets, "kid_subset_size": kid.subset_size}
    if "prdc" in metrics:
        results["prdc"] = asdict(precision_recall_density_coverage(real_features, generated_features, k))
    done = time.perf_counter()
    return Evaluation(
        generated.source,
        real.source,
        len(generated),
        len(real),
        seconds={
            "features": round(extracted - start, 3),
            "metrics": round(done - extracted, 3),
        },
        cached={"generated": generated_cached, "real": real_cached},
        **results,
    )
