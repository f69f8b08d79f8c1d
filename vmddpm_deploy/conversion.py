"""``convert``: a checkpoint in any form we read (``.safetensors``, ``.pt``, a ``save_pretrained``
directory) written as our safetensors checkpoint or as a diffusers ``save_pretrained`` directory.

Nothing here imports torch or diffusers until a conversion runs; the targets are
:data:`vmddpm_deploy.choices.CONVERSION_TARGETS`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vmddpm_deploy.choices import CONVERSION_TARGETS
from vmddpm_deploy.errors import InvalidArgumentError, OutputError


def convert_checkpoint(source: str | os.PathLike, out: str | os.PathLike, to: str, force: bool = False) -> Path:
    """Read ``source`` (validated) and write it as ``to`` at ``out``; the result is read back
    before it takes ``out``'s name, so ``out`` only ever holds a complete, loadable checkpoint."""
    from vmddpm_deploy.checkpoint import TORCH_SAVE_SUFFIXES, load_checkpoint, save_checkpoint

    source, out = Path(source), Path(out)
    if to not in CONVERSION_TARGETS:
        raise InvalidArgumentError(f"unknown conversion target {to!r}; choose one of {', '.join(CONVERSION_TARGETS)}")
    if to == "diffusers":
        from vmddpm_deploy.diffusers import require_diffusers

        require_diffusers("convert --to diffusers")
    if out.exists() and not force:
        raise OutputError(f"{out} already exists; pass --force to replace it")
    if out.resolve() == source.resolve():
        raise InvalidArgumentError(f"OUT is SRC ({out}); write the conversion elsewhere")
    if to == "safetensors" and out.suffix in TORCH_SAVE_SUFFIXES:
        raise InvalidArgumentError(f"{out.name} names a torch.save file; give OUT a .safetensors name")
    checkpoint = load_checkpoint(source)
    staged = out.with_name(f".{out.name}.convert-{os.getpid()}")
    _remove(staged)
    try:
        if to == "safetensors":
            save_checkpoint(checkpoint, staged)
        else:
            from vmddpm_deploy.diffusers.model import VMDDPMModel

            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                VMDDPMModel.from_checkpoint(checkpoint).save_pretrained(staged)
            except OSError as exc:
                raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
        load_checkpoint(staged)  # what OUT will hold loads, or nothing replaces OUT
        _remove(out)
        staged.replace(out)
    finally:
        _remove(staged)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
