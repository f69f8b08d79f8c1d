"""ImageDataset: the in-memory slices, and the import order it makes possible (readers and the
bundled set build it; neither imports the loader that dispatches to them)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

import vmddpm_deploy.data
from vmddpm_deploy.data.image_dataset import ImageDataset

DATA_PACKAGE = Path(vmddpm_deploy.data.__file__).parent


def test_batch_maps_uint16_to_the_model_range_and_fingerprint_follows_the_pixels():
    images = np.array([0, 65535, 32768, 1], np.uint16).reshape(4, 1, 1, 1).repeat(2, 2).repeat(2, 3)
    dataset = ImageDataset(images, ("a", "b", "c", "d"), "test", "folder")
    batch = dataset.batch(np.array([1, 0]))
    assert batch.dtype == torch.float32 and batch.shape == (2, 1, 2, 2)
    assert batch[0].min().item() == 1.0 and batch[1].max().item() == -1.0
    assert len(dataset) == 4 and dataset.image_size == 2 and "4 images of 2x2 from test" in dataset.summary()
    other = ImageDataset(images[::-1].copy(), dataset.names, "test", "folder")
    assert dataset.fingerprint() != other.fingerprint()
    assert dataset.fingerprint() == ImageDataset(images.copy(), (), "elsewhere", "bundled").fingerprint()


def _imports(path: Path) -> set[str]:
    """The vmddpm_deploy.data modules ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmddpm_deploy.data."):
            found.add(node.module.rpartition(".")[2])
    return found


def test_the_data_modules_import_each_other_without_a_cycle():
    graph = {path.stem: _imports(path) for path in DATA_PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert "image_dataset" in graph["bundled"] and "bundled" in graph["dataset"]  # the edges that once circled
    visiting, done = set(), set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join(trail + (module,))}"
        if module in done:
            return
        visiting.add(module)
        for imported in graph.get(module, ()):
            visit(imported, trail + (module,))
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, ())
