"""Contact sheets: labelled grids of images side by side in one PNG (the demo's generated vs real
slices, the memorization report's generated images beside their nearest training images)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.outputs import image_grid


def write_contact_sheet(path: Path, panels: list[tuple[str, np.ndarray]], caption: str) -> Path:
    """One PNG with labelled panels side by side; each panel a grid of uint8 (n, C, H, W) images."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    margin, gap, header, footer = 12, 24, 30, 34
    grids = [image_grid(images) for _, images in panels]
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
