"""`sample` killed with SIGKILL at random moments, then resumed: are the files those of an
uninterrupted run, byte for byte, with no temporary file left?

    python benchmarks/kill_resume.py --tries 20 --json kill_resume.json

For each format, ``--tries`` jobs. A job picks a split (1, 2 or 3 shards, sharing the output
directory as a job array does); each shard's process is started and SIGKILLed after a random delay
drawn over an uninterrupted shard's duration (interpreter start-up included, so kills land before
the first file as well as during the last merge), killed once more on its first resume with
probability 1/2, then resumed to the end. Its files are compared with an uninterrupted job of the
same split. The table
counts the kills that hit a running process, the files that differ from the reference and the
temporary files left. It exits 1 when any file differs or any temporary file is left.

The model is a micro random one (8 x 8 images), so a run takes a few seconds and what is tested is
the writing, not the network; tests/jobs/test_kill_stages.py kills before every single disk change.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

FORMATS = ("png", "npz", "nifti", "nifti-volume")
SPLITS = (1, 2, 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=20, help="killed jobs per format (default 20)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated --format values")
    parser.add_argument("--n", type=int, default=12, help="images per job (default 12)")
    parser.add_argument("--batch-size", type=int, default=3, help="--batch-size of every run (default 3)")
    parser.add_argument("--steps", type=int, default=6, help="DDIM steps, eta 0.5 (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and splits (default 0)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.formats.split(",")) - set(FORMATS))
    if unknown:
        parser.error(f"unknown --formats {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if min(args.tries, args.n, args.batch_size, args.steps) < 1:
        parser.error("--tries, --n, --batch-size and --steps must be at least 1")
    return args


def make_checkpoint(directory: Path) -> Path:
    from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
    from vmddpm_deploy.diffusion import NoiseSchedule
    from vmddpm_deploy.model import ModelConfig

    config = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return save_checkpoint(init_checkpoint(config, NoiseSchedule(), seed=0), directory / "micro.pt")


def sample_command(args: argparse.Namespace, ckpt: Path, out: Path, image_format: str, shard: str,
                   resume: bool) -> list[str]:
    command = [
        sys.executable, "-c", "from vmddpm_deploy.cli import main; main()", "sample", str(ckpt),
        "--n", str(args.n), "--batch-size", str(args.batch_size), "--sampler", "ddim", "--steps", str(args.steps), "--eta", "0.5",
        "--seed", "7", "--format", image_format, "--shard", shard, "--out", str(out), "--quiet",
    ]
    return command + (["--resume"] if resume else [])


def finished(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"a run that should finish failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def killed_after(command: list[str], delay: float) -> bool:
    """Start ``command``, SIGKILL it after ``delay`` seconds; True when it was still running."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def image_files(out: Path) -> dict[str, bytes]:
    """The files a job is for (progress and summary JSON hold timings, so they are left out)."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".json")}


def leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in (*out.glob(".*tmp*"), *out.glob(".parts/*")))


def run_job(args: argparse.Namespace, ckpt: Path, out: Path, image_format: str, count: int) -> float:
    """An uninterrupted job split into ``count`` shards; its wall time."""
    start = time.perf_counter()
    for index in range(count):
        finished(sample_command(args, ckpt, out, image_format, f"{index}/{count}", resume=False))
    return time.perf_counter() - start


def run_format(args: argparse.Namespace, ckpt: Path, scratch: Path, image_format: str, rng: random.Random) -> dict:
    # One reference per split: a stacked format writes one file per shard, so only an uninterrupted
    # job of the same split has the same files (tests/jobs/test_output_dir.py checks that splits
    # agree with each other).
    references: dict[int, dict[str, bytes]] = {}
    seconds: dict[int, float] = {}  # per split: one shard's uninterrupted wall time, start-up included
    run_seconds = run_job(args, ckpt, scratch / f"{image_format}-reference-1", image_format, 1)
    seconds[1] = run_seconds
    row = {"format": image_format, "tries": args.tries, "kills": 0, "kills_on_resume": 0, "differing_files": 0,
           "missing_files": 0, "temporary_files_left": 0, "reference_run_seconds": round(run_seconds, 2), "splits": {}}
    for attempt in range(args.tries):
        count = rng.choice(SPLITS)
        row["splits"][str(count)] = row["splits"].get(str(count), 0) + 1
        if count not in references:
            reference = scratch / f"{image_format}-reference-{count}"
            if count != 1:
                seconds[count] = run_job(args, ckpt, reference, image_format, count) / count
            references[count] = image_files(reference)
        expected = references[count]
        out = scratch / f"{image_format}-{attempt}"
        for index in range(count):
            shard = f"{index}/{count}"
            row["kills"] += killed_after(
                sample_command(args, ckpt, out, image_format, shard, resume=False), rng.uniform(0, seconds[count])
            )
            if rng.random() < 0.5:
                row["kills_on_resume"] += killed_after(
                    sample_command(args, ckpt, out, image_format, shard, resume=True), rng.uniform(0, seconds[count])
                )
            finished(sample_command(args, ckpt, out, image_format, shard, resume=True))
        got = image_files(out)
        row["differing_files"] += sum(got[name] != data for name, data in expected.items() if name in got)
        row["missing_files"] += len(set(expected) ^ set(got))
        row["temporary_files_left"] += len(leftovers(out))
        shutil.rmtree(out)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as scratch:
        ckpt = make_checkpoint(Path(scratch))
        for image_format in args.formats.split(","):
            rows.append(run_format(args, ckpt, Path(scratch), image_format, rng))
    table = Table(title=f"sample killed with SIGKILL and resumed (n {args.n}, batch {args.batch_size}, "
                        f"DDIM {args.steps} eta 0.5; {time.perf_counter() - started:.0f} s)")
    for column in ("format", "jobs", "kills", "kills on resume", "splits 1/2/3", "differing files",
                   "missing or extra files", "temporary files left"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for row in rows:
        splits = "/".join(str(row["splits"].get(str(count), 0)) for count in SPLITS)
        table.add_row(row["format"], str(row["tries"]), str(row["kills"]), str(row["kills_on_resume"]), splits,
                      str(row["differing_files"]), str(row["missing_files"]), str(row["temporary_files_left"]))
    Console(width=160).print(table)
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "json"},
                                         "rows": rows}, indent=2, default=str))
    bad = any(row["differing_files"] or row["missing_files"] or row["temporary_files_left"] for row in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
