"""Time of the memorization report once the Inception features exist (as when they are cached).

    python benchmarks/bench_memorization.py --generated 10000 --train 10000 --heldout 1000 --size 32

Synthetic uint8 images (random, grey, --size square) and random 2048-d features stand in for real
ones: the cost of the nearest-neighbour search depends only on the shapes. The features come from
a stand-in "network" that returns precomputed rows, so the ``features`` stage is ~0 here and the
numbers are what ``evaluate --memorization`` adds after feature extraction (or a cache hit, which
reads one .npy per set). Reported: the nearest-neighbour stage (both similarities, generated and
held-out against train) and writing the report files (JSON, two contact sheets, histogram), and
the search's CPU time over all threads (on a machine shared with other jobs the wall time says
little, the CPU time more).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vmddpm_deploy.evaluation import ImageSet
from vmddpm_deploy.evaluation.inception import FEATURE_DIM
from vmddpm_deploy.evaluation.memorization import find_nearest_training_images, write_report_files


class PrecomputedFeatures:
    """Returns the next rows of a fixed random feature matrix per call (in set order)."""

    def __init__(self, total: int, seed: int = 0):
        self.rows = np.abs(np.random.default_rng(seed).normal(size=(total, FEATURE_DIM))).astype(np.float32)
        self.position = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        rows = self.rows[self.position : self.position + len(images)]
        self.position += len(images)
        return rows


def synthetic_set(name: str, n: int, size: int, seed: int) -> ImageSet:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)
    return ImageSet(name, (1, size, size), None, array=images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--heldout", type=int, default=1_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sets = [synthetic_set(name, n, args.size, seed) for seed, (name, n) in
            enumerate((("generated", args.generated), ("train", args.train), ("heldout", args.heldout)))]
    extractor = PrecomputedFeatures(sum(len(s) for s in sets))
    start, cpu_start = time.perf_counter(), time.process_time()
    report = find_nearest_training_images(*sets, extractor=extractor, batch_size=1024, cache=False)
    searched, cpu_searched = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        write_report_files(report, Path(out))
    written = time.perf_counter()
    row = {
        "generated": args.generated, "train": args.train, "heldout": args.heldout, "size": args.size,
        "torch_threads": torch.get_num_threads(),
        "neighbours_s": round(report.seconds["neighbours"], 2),
        "search_total_s": round(searched - start, 2),
        "search_cpu_s": round(cpu_searched - cpu_start, 2),
        "report_files_s": round(written - searched, 2),
        "total_s": round(written - start, 2),
    }
    print(" ".join(f"{key}={value}" for key, value in row.items()))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
