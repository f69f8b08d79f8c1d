"""Turn a training checkpoint into the demo checkpoint the package ships.

    .venv/bin/python scripts/bundle_demo_checkpoint.py regen.pt vmddpm_deploy/data/bundled/vmddpm_tiny_mni152.safetensors

Keeps only what sampling uses: the EMA weights (the raw ones where the run had no EMA) become
the checkpoint's ``model`` and are stored as fp16, which quarters the file (28 MB -> 7 MB for
the tiny preset). OUT is written as safetensors, the form the package ships (SOURCE may be
either form). Loading casts them back into the fp32 model, so the only change is fp16's
rounding of the weights. The result is read back with ``load_checkpoint`` before it replaces
OUT, and the sha256 printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vmddpm_deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vmddpm_deploy.digests import sha256_file


def bundle(source: Path, out: Path) -> Checkpoint:
    checkpoint = load_checkpoint(source)
    weights = {
        name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        for name, tensor in checkpoint.inference_weights.items()
    }
    staged = out.with_name(out.name + ".new")  # not a .pt name: save_checkpoint writes safetensors
    save_checkpoint(Checkpoint(checkpoint.config, checkpoint.schedule, weights), staged)
    try:
        bundled = load_checkpoint(staged)
    except Exception:
        staged.unlink()
        raise
    staged.replace(out)
    return bundled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="checkpoint written by `vmddpm-deploy train`")
    parser.add_argument("out", type=Path, help="where to write the demo checkpoint")
    args = parser.parse_args()
    if args.out.suffix != ".safetensors":
        parser.error(f"OUT must be a .safetensors file, got {args.out}")
    bundle(args.source, args.out)
    print(f"wrote {args.out}: {args.out.stat().st_size / 2**20:.2f} MB, sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
