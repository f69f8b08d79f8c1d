"""Does a model copy its training images? Nearest training neighbours, calibrated by held-out images.

For every generated image we find its nearest training image under two similarities:

* ``pixel_pearson``: the Pearson correlation of the pixel values, r(x, y) = z(x) . z(y) with
  z(v) = (v - mean(v)) / ||v - mean(v)|| over all C x H x W pixels (the measure of Akbar et al.,
  "Beware of diffusion models for synthesizing medical images", 2023). An image of constant pixels
  has no correlation: its z is 0, so it scores 0 against everything.
* ``inception_cosine``: the cosine of the FID Inception pool3 features (the same features, and the
  same cache, as FID), which also sees a copy that was shifted or re-contrasted.

A high similarity alone does not mean a copy: every brain slice correlates strongly with some
other brain slice. Held-out real images, which the model never saw, are matched against the
training set the same way; their nearest-neighbour scores are what "alike but not copied" looks
like for this data. Each generated image gets its held-out percentile (the fraction of held-out
images whose nearest-training score is below its own), and a generated image more similar to a
training image than any held-out image ever is to one is a *likely copy*. With G generated and H
held-out images drawn from one distribution, about G / (H + 1) pass that threshold by chance, so
the fraction means something only when it clearly exceeds 1 / (H + 1).

All similarities are float32 matrix products of unit rows, chunked over the query images, so
10,000 x 10,000 images never hold more than one block of the similarity matrix in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.contact_sheet import write_contact_sheet
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.evaluation.features import extract_features
from vmddpm_deploy.evaluation.image_sets import ImageSet, require_same_shape
from vmddpm_deploy.evaluation.inception import InceptionFeatureExtractor

MEASURES = ("pixel_pearson", "inception_cosine")
#: Query rows per similarity block: CHUNK_ROWS x 10,000 float32 is 40 MB.
CHUNK_ROWS = 1024
DEFAULT_PAIRS = 16
#: Held-out images this close to a training image are the same image: the sets overlap.
DUPLICATE_PEARSON = 0.9999
REPORT_JSON = "memorization.json"
HISTOGRAM_PNG = "nn_histogram.png"


def sheet_name(measure: str) -> str:
    return f"closest_pairs_{measure}.png"


def unit_pixel_rows(images: np.ndarray) -> np.ndarray:
    """uint8 (n, C, H, W) -> float32 (n, C*H*W) centred, unit-norm rows (zero rows for constant images)."""
    rows = images.reshape(len(images), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    return unit_rows(rows)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(n, d) -> float32 (n, d) rows scaled to unit norm; zero rows stay zero."""
    rows = np.array(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


def nearest_neighbours(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows (m, d) and (n, d) -> (highest similarity (m,) float64, its reference index (m,) int64)."""
    best, index = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for start in range(0, len(queries), CHUNK_ROWS):
        block = queries[start : start + CHUNK_ROWS] @ references.T
        nearest = block.argmax(axis=1)
        index[start : start + len(block)] = nearest
        best[start : start + len(block)] = block[np.arange(len(block)), nearest]
    return np.clip(best, -1.0, 1.0), index  # float32 rounding puts an exact copy at 1 + 1e-6


@dataclass(frozen=True)
class MeasureResult:
    """One similarity's nearest training neighbours for the generated and the held-out images."""

    score: np.ndarray  # (n_generated,) similarity of each generated image to its nearest training image
    nearest: np.ndarray  # (n_generated,) that training image's index
    heldout_score: np.ndarray  # (n_heldout,) the same for each held-out image

    @property
    def threshold(self) -> float:
        """The highest similarity any held-out image has to a training image."""
        return float(self.heldout_score.max())

    @property
    def likely_copy(self) -> np.ndarray:
        return self.score > self.threshold

    @property
    def heldout_percentile(self) -> np.ndarray:
        """Per generated image: the fraction of held-out images whose score is below its own."""
        ranks = np.searchsorted(np.sort(self.heldout_score), self.score, side="left")
        return ranks / len(self.heldout_score)

    def closest(self, pairs: int) -> np.ndarray:
        """Indices of the ``pairs`` generated images most similar to their training neighbour, closest first."""
        return np.argsort(-self.score, kind="stable")[:pairs]


@dataclass(frozen=True)
class MemorizationReport:
    generated: ImageSet
    train: ImageSet
    heldout: ImageSet
    measures: dict[str, MeasureResult]
    seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)

    def summary(self, pairs: int = DEFAULT_PAIRS) -> dict[str, Any]:
        """What a script needs to decide: per measure the likely copies, the score distributions and
        the closest pairs (no per-image arrays; :meth:`to_dict` has them)."""
        generated_names, train_names = self.generated.names(), self.train.names()
        measures = {}
        for name, result in self.measures.items():
            percentile = result.heldout_percentile
            measures[name] = {
                "likely_copies": int(result.likely_copy.sum()),
                "likely_copy_fraction": float(result.likely_copy.mean()),
                "chance_fraction": 1.0 / (len(self.heldout) + 1),
                "threshold": result.threshold,
                "generated_nn": _quantiles(result.score),
                "heldout_nn": _quantiles(result.heldout_score),
                "above_heldout_median_fraction": float((percentile > 0.5).mean()),
                "closest_pairs": [
                    {
                        "generated": generated_names[i],
                        "train": train_names[result.nearest[i]],
                        "score": float(result.score[i]),
                        "heldout_percentile": float(percentile[i]),
                    }
                    for i in result.closest(pairs)
                ],
            }
        return {
            "generated": self.generated.source,
            "train": self.train.source,
            "heldout": self.heldout.source,
            "n_generated": len(self.generated),
            "n_train": len(self.train),
            "n_heldout": len(self.heldout),
            "measures": measures,
            "notes": self.notes(),
            "features_cached": self.cached,
            "seconds": self.seconds,
        }

    def to_dict(self, pairs: int = DEFAULT_PAIRS) -> dict[str, Any]:
        """The summary plus, per measure, every generated image's nearest training image, score and
        held-out percentile, in the generated set's order (``generated_names``)."""
        per_image = {
            name: {
                "nearest_train": result.nearest.tolist(),
                "score": np.round(result.score, 6).tolist(),
                "heldout_percentile": np.round(result.heldout_percentile, 6).tolist(),
                "heldout_score": np.round(result.heldout_score, 6).tolist(),
            }
            for name, result in self.measures.items()
        }
        return self.summary(pairs) | {
            "generated_names": self.generated.names(),
            "train_names": self.train.names(),
            "per_image": per_image,
        }

    def notes(self) -> list[str]:
        duplicates = int((self.measures["pixel_pearson"].heldout_score >= DUPLICATE_PEARSON).sum())
        if not duplicates:
            return []
        return [
            f"{duplicates} held-out image(s) correlate >= {DUPLICATE_PEARSON} with a training image: the held-out "
            f"set overlaps the training set, so the threshold is too high and copies are under-counted"
        ]


def _quantiles(values: np.ndarray) -> dict[str, float]:
    low, median, p95 = np.quantile(values, [0.05, 0.5, 0.95])
    return {"p5": float(low), "median": float(median), "p95": float(p95), "max": float(values.max())}


def check_pairs(pairs: int) -> None:
    if pairs < 1:
        raise InvalidArgumentError(f"--pairs must be at least 1, got {pairs}")


def find_nearest_training_images(
    generated: ImageSet,
    train: ImageSet,
    heldout: ImageSet,
    *,
    extractor: InceptionFeatureExtractor | None = None,
    batch_size: int = 32,
    cache: bool = True,
    on_images: Callable[[int], None] | None = None,
) -> MemorizationReport:
    """Both similarities for the generated and the held-out images against the training images.

    ``on_images(k)`` reports feature-extraction progress in images (of the three sets' total).
    """
    require_same_shape(generated, train, heldout)
    extractor = extractor or InceptionFeatureExtractor()
    start = time.perf_counter()
    sets = {"generated": generated, "train": train, "heldout": heldout}
    features, cached = {}, {}
    for role, image_set in sets.items():
        features[role], cached[role] = extract_features(image_set, extractor, batch_size, cache, on_images)
    extracted = time.perf_counter()
    pixels = {role: unit_pixel_rows(image_set.pixels()) for role, image_set in sets.items()}
    unit_features = {role: unit_rows(value) for role, value in features.items()}
    measures = {}
    for name, rows in (("pixel_pearson", pixels), ("inception_cosine", unit_features)):
        score, nearest = nearest_neighbours(rows["generated"], rows["train"])
        heldout_score, _ = nearest_neighbours(rows["heldout"], rows["train"])
        measures[name] = MeasureResult(score, nearest, heldout_score)
    done = time.perf_counter()
    return MemorizationReport(
        generated,
        train,
        heldout,
        measures,
        seconds={"features": round(extracted - start, 3), "neighbours": round(done - extracted, 3)},
        cached=cached,
    )


def write_report_files(report: MemorizationReport, out: Path, pairs: int = DEFAULT_PAIRS) -> dict[str, str]:
    """``memorization.json`` (:meth:`MemorizationReport.to_dict`), one contact sheet per measure and,
    where matplotlib is installed, the histogram; returns {what: path} of the files written."""
    import json

    files = {}
    generated_pixels, train_pixels = report.generated.pixels(), report.train.pixels()
    for name, result in report.measures.items():
        order = result.closest(pairs)
        caption = (
            f"{name}: closest {len(order)} pairs, scores {result.score[order[0]]:.3f} to "
            f"{result.score[order[-1]]:.3f}; "
            f"highest held-out score {result.threshold:.3f}; likely copies {int(result.likely_copy.sum())} "
            f"of {len(result.score)}"
        )
        panels = [
            ("generated, closest first", generated_pixels[order]),
            ("nearest training image, same place", train_pixels[result.nearest[order]]),
        ]
        files[f"sheet_{name}"] = str(write_contact_sheet(out / sheet_name(name), panels, caption))
    if _has_matplotlib():
        files["histogram"] = str(write_histogram(report, out / HISTOGRAM_PNG))
    data = json.dumps(report.to_dict(pairs) | {"files": files}).encode()
    files["json"] = str(write_atomic(out / REPORT_JSON, lambda handle: handle.write(data)))
    return files


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_histogram(report: MemorizationReport, path: Path) -> Path:
    """Per measure, the nearest-training scores of the generated and the held-out images, with the
    likely-copy threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(report.measures), figsize=(5.5 * len(report.measures), 3.8))
    for axis, (name, result) in zip(np.atleast_1d(axes), report.measures.items()):
        low = min(result.score.min(), result.heldout_score.min())
        bins = np.linspace(low, 1.0, 41)
        heldout_label = f"held-out real (n={len(report.heldout)})"
        axis.hist(result.heldout_score, bins=bins, density=True, alpha=0.55, label=heldout_label)
        axis.hist(result.score, bins=bins, density=True, alpha=0.55, label=f"generated (n={len(report.generated)})")
        axis.axvline(result.threshold, color="black", linestyle="--", label="highest held-out score")
        axis.set(
            xlabel=f"{name} to the nearest training image",
            ylabel="density",
            title=f"likely copies: {int(result.likely_copy.sum())} of {len(result.score)}",
        )
        axis.legend(fontsize=8)
    figure.tight_layout()
    try:
        return write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(figure)
