"""The image sets ``evaluate`` compares: folders of PNG or NPZ files, one NPZ file, or the bundled
brain MRI slices, read in batches of 8-bit images.

What can be named:

* a folder (searched recursively; hidden entries such as ``sample``'s ``.parts/`` are skipped)
  of PNG files, 8- or 16-bit, grey or colour, all of one size: ``sample``'s PNG layout;
* a folder of ``.npz`` files or one ``.npz`` file holding an ``images`` array (n, C, H, W) or
  (n, H, W): ``sample --format npz``'s ``samples.npz`` (and its shards); uint8, uint16 (0..65535)
  or float in [-1, 1] (the model's range);
* ``bundled``, ``bundled:heldout``, ``bundled:train`` or ``bundled:all``: the MNI152 slices of
  :mod:`vmddpm_deploy.data.bundled` (``bundled`` alone means the held-out slices).

FID is defined on 8-bit images, so 16-bit and float pixels are rounded to 8 bits (``v / 257``)
like every FID tool's image loader does; alpha channels are dropped.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vmddpm_deploy.errors import DataError, InvalidArgumentError
from vmddpm_deploy.outputs import to_uint16

PNG_SUFFIX = ".png"
NPZ_SUFFIX = ".npz"
BUNDLED_PREFIX = "bundled"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images to extract features from, in a fixed order.

    Backed either by PNG files read batch by batch (``pngs``) or by an in-memory uint8 array
    ``array (n, C, H, W)``. ``shape`` is (C, H, W) with C in {1, 3}. ``fingerprint`` identifies the
    content cheaply (file names, sizes and modification times; the bundled file's sha256), so
    features can be cached under it; ``None`` means do not cache.
    """

    source: str
    shape: tuple[int, int, int]
    fingerprint: str | None
    pngs: tuple[Path, ...] = ()
    array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.pngs)

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """At most ``n`` images: a fixed random subset (sorted), so a capped set still covers
        every part of a folder sorted by class or contrast."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise InvalidArgumentError(f"--n must be at least 1, got {n}")
        keep = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        fingerprint = None
        if self.fingerprint is not None:
            fingerprint = _digest(self.fingerprint, keep.tobytes())
        if self.array is not None:
            return replace(self, array=self.array[keep], fingerprint=fingerprint)
        return replace(self, pngs=tuple(self.pngs[i] for i in keep), fingerprint=fingerprint)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield uint8 (batch, C, H, W) arrays of at most ``batch_size`` images, in order."""
        for start in range(0, len(self), batch_size):
            if self.array is not None:
                yield self.array[start : start + batch_size]
            else:
                yield np.stack([self._read_png(path) for path in self.pngs[start : start + batch_size]])

    def pixels(self) -> np.ndarray:
        """Every image at once, uint8 (n, C, H, W)."""
        return self.array if self.array is not None else np.concatenate(list(self.batches(256)))

    def names(self) -> list[str]:
        """One label per image, in order: a PNG's path inside the set's folder, else ``source[i]``."""
        if self.array is not None:
            return [f"{self.source}[{i}]" for i in range(len(self))]
        root = Path(self.source)
        return [str(path.relative_to(root)) if path.is_relative_to(root) else str(path) for path in self.pngs]

    def _read_png(self, path: Path) -> np.ndarray:
        image = read_png8(path)
        if image.shape != self.shape:
            raise DataError(
                f"{path} is {_describe(image.shape)} but {self.pngs[0].name} in {self.source} is "
                f"{_describe(self.shape)}; a set must hold images of one size and colour type"
            )
        return image


def open_image_set(spec: str | Path, size_hint: int | None = None) -> ImageSet:
    """The image set named by ``spec`` (see the module docstring).

    ``size_hint`` is the resolution the bundled slices are loaded at (normally the other set's),
    so real and generated images reach the feature extractor equally sharp.
    """
    text = str(spec)
    if text == BUNDLED_PREFIX or text.startswith(BUNDLED_PREFIX + ":"):
        return _bundled_set(text.partition(":")[2] or "heldout", size_hint)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path} does not exist; give a folder of PNG or NPZ images, an .npz file or bundled:heldout")
    if path.is_file():
        if path.suffix.lower() != NPZ_SUFFIX:
            raise DataError(f"{path} is a file but not an .npz; give a folder of images, an .npz file or bundled:heldout")
        return _npz_set(text, path.parent, [path])
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    pngs = [p for p in files if p.suffix.lower() == PNG_SUFFIX]
    npzs = [p for p in files if p.suffix.lower() == NPZ_SUFFIX]
    if pngs and npzs:
        raise DataError(
            f"{path} holds both PNG files ({len(pngs)}) and NPZ files ({len(npzs)}); point at a folder with one kind"
        )
    if npzs:
        return _npz_set(text, path, npzs)
    if not pngs:
        raise DataError(f"{path} holds no PNG or NPZ images")
    return ImageSet(text, read_png8(pngs[0]).shape, _stat_fingerprint(path, pngs), pngs=tuple(pngs))


def require_same_shape(*sets: ImageSet) -> None:
    """DataError unless every set holds images of one size and channel count: pixels can only be
    compared pixel for pixel, and features of images resized by different factors differ in
    sharpness, not in content."""
    first = sets[0]
    for other in sets[1:]:
        if other.shape != first.shape:
            raise DataError(
                f"{first.source} holds {_describe(first.shape)} images but {other.source} holds "
                f"{_describe(other.shape)}; compare sets of one size and colour type (resize one of them first)"
            )


def images_to_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """uint8 / uint16 / float-in-[-1, 1] images (n, C, H, W) or (n, H, W) -> uint8 (n, C, H, W), C in {1, 3}."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{source}: images must be (n, C, H, W) or (n, H, W), got shape {images.shape}")
    if images.shape[1] in (2, 4):
        images = images[:, :-1]  # grey+alpha, RGBA: FID sees the colour channels only
    if images.shape[1] not in (1, 3):
        raise DataError(f"{source}: FID takes grey or RGB images, these have {images.shape[1]} channels")
    if np.issubdtype(images.dtype, np.floating):
        images = to_uint16(images)  # the model's [-1, 1] range, quantised as `sample` stores it
    if images.dtype == np.uint16:
        return ((images.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    raise DataError(f"{source}: images of dtype {images.dtype}; give uint8, uint16 or float in [-1, 1]")


def read_png8(path: Path) -> np.ndarray:
    """One PNG as uint8 (C, H, W), C in {1, 3}: 16-bit grey rounded to 8 bits, alpha dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            elif image.mode in ("1", "L", "LA", "I;8"):
                pixels = np.asarray(image.convert("L"))
            else:
                pixels = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read {path} as a PNG image ({str(exc).splitlines()[0][:120]})") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return images_to_uint8(pixels[None], str(path))[0]


def _npz_set(source: str, root: Path, paths: list[Path]) -> ImageSet:
    blocks = []
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "images" not in npz.files:
                    raise DataError(
                        f"{path} has no 'images' array (it has {', '.join(npz.files) or 'nothing'}); give "
                        f"`sample --format npz` output, or bundled:heldout for the bundled slices"
                    )
                images = npz["images"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated or not a zip
            raise DataError(f"cannot read {path} as an .npz file ({str(exc).splitlines()[0][:120]})") from None
        blocks.append(images_to_uint8(images, str(path)))
    shapes = {block.shape[1:] for block in blocks}
    if len(shapes) > 1:
        raise DataError(f"the .npz files of {source} hold images of different shapes: {sorted(shapes)}")
    array = np.concatenate(blocks)
    if not len(array):
        raise DataError(f"{source} holds no images (its 'images' arrays are empty)")
    return ImageSet(source, tuple(array.shape[1:]), _stat_fingerprint(root, paths), array=array)


def _bundled_set(split: str, size_hint: int | None) -> ImageSet:
    from vmddpm_deploy.data.bundled import BUNDLED_MANIFEST, BUNDLED_SIZES, load_bundled
    from vmddpm_deploy.data.preprocess import resize_square

    size = size_hint if size_hint is not None else max(BUNDLED_SIZES)
    dataset = load_bundled(split, size if size in BUNDLED_SIZES else max(BUNDLED_SIZES))
    images = dataset.images
    if size not in BUNDLED_SIZES:  # e.g. a 128 x 128 model, or an 8 x 8 test model
        x01 = images[:, 0].astype(np.float32) / 65535.0
        images = to_uint16(resize_square(x01, (1.0, 1.0), size, "pad") * 2.0 - 1.0)[:, None]
    fingerprint = _digest(BUNDLED_MANIFEST.read_bytes(), f"{split}:{size}".encode())
    return ImageSet(f"bundled:{split}", (1, size, size), fingerprint, array=images_to_uint8(images, "bundled"))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _stat_fingerprint(root: Path, paths: list[Path]) -> str:
    entries = []
    for path in paths:
        stat = path.stat()
        entries.append(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return _digest(str(root.resolve()).encode(), "\n".join(entries).encode())


def _digest(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def _describe(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{width}x{height} {'grey' if channels == 1 else 'RGB'}"
