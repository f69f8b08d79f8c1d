"""Contact sheets: labelled grids of images side by side in one PNG (the demo's generated vs real
slices, the memorization report's generated images beside their nearest training images)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic

TILE_PIXELS = 128  # each image is scaled up (nearest neighbour, no smoothing) to about this size


def write_contact_sheet(path: Path, panels: list[tuple[str, np.ndarray]], caption: str) -> Path:
    """One PNG with labelled panels side by side; each panel a grid of uint8 (n, C, H, W) images."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    margin, gap, header, footer = 12, 24, 30, 34
    grids = [_grid(images) for _, images in panels]
    columns = [max(grid.width, math.ceil(font.getlength(title))) for (title, _), grid in zip(panels, grids)]
    width = 2 * margin + max(sum(columns) + gap * (len(grids) - 1), math.ceil(font.getlength(caption)))
    height = margin + header + max(grid.height for grid in grids) + footer
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x = margin
    for (title, _), grid, column in zip(panels, grids, columns):
        draw.text((x, margin), title, fill="black", font=font)
        sheet.paste(grid, (x, margin + header))
        x += column + gap
    draw.text((margin, height - footer + 8), caption, fill="black", font=font)
    return write_atomic(path, lambda handle: sheet.save(handle, format="PNG"))


def _grid(images: np.ndarray):
    from PIL import Image

    count, channels, size = len(images), images.shape[1], images.shape[-1]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = max(1, TILE_PIXELS // size)
    tile, border = size * scale, 2
    canvas = np.full((rows * (tile + border) - border, columns * (tile + border) - border, 3), 128, np.uint8)
    for k, image in enumerate(images):
        rgb = np.repeat(image, 3, axis=0) if channels == 1 else image
        big = rgb.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = (k // columns) * (tile + border), (k % columns) * (tile + border)
        canvas[top : top + tile, left : left + tile] = big
    return Image.fromarray(canvas)
