"""`vmddpm-deploy check`: do an export's graphs compute what the checkpoint computes?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmddpm_deploy.cli.app import JSON_HELP, app, json_to_stdout, parse_csv, reports_errors, wide_console, write_json
from vmddpm_deploy.errors import ParityError


@app.command()
@reports_errors
def check(
    export_dir: Annotated[Path, typer.Argument(help="Export directory (from `vmddpm-deploy export`).")],
    backends: Annotated[
        str,
        typer.Option(
            help="Comma-separated rows compared with torch fp32: torch (the reference itself), onnxruntime "
            "(portable graph), reference-onnx (the custom-node graph TensorRT parses, run by onnx's "
            "ReferenceEvaluator with our ops), reference-onnx-fp16 (its fp16 twin), tensorrt (the engine)."
        ),
    ] = "onnxruntime,reference-onnx,reference-onnx-fp16",
    batch: Annotated[int, typer.Option(help="Batch size of the test input (1 to 256).")] = 2,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint for the torch fp32 reference; default: the one the manifest names, if it is "
            "still there with the recorded sha256."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Device: cpu, cuda.")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", metavar="PATH", help=JSON_HELP)] = None,
) -> None:
    """Run one (x, t) batch through each backend and compare eps with torch fp32.

    Prints max abs / max rel error per row and pass/fail by the row's dtype tolerance (fp32 rows:
    1e-4 absolute; fp16 rows: atol 5e-3, rtol 3e-3): an element passes when its error is at most
    atol + rtol x |eps|, and "max error / allowed" is the largest error in those units (<= 1: pass). Exits 10 when a row fails. The export's
    checksums are verified first (exit 8 on a mismatch).

    Example: vmddpm-deploy check exports/ckpt --backends onnxruntime,reference-onnx --batch 2
    """
    from rich.table import Table

    from vmddpm_deploy.runtime.parity import run_check
    from vmddpm_deploy.runtime.source import open_source

    names = parse_csv(backends, "--backends")
    rows = run_check(open_source(export_dir), names, batch, device, checkpoint)
    if not json_to_stdout(json_path):
        table = Table(title=f"eps vs torch fp32, {export_dir}, batch {batch}")
        for column in ("backend", "max abs", "max rel", "tolerance", "max error / allowed", "result"):
            table.add_column(column, justify="left" if column in ("backend", "result") else "right")
        for row in rows:
            table.add_row(row["backend"], f"{row['max_abs']:.2e}", f"{row['max_rel']:.2e}",
                          f"atol {row['atol']:g} + rtol {row['rtol']:g} x |eps|",
                          f"{row['max_error_over_allowed']:.2f}", _verdict(row))
        wide_console().print(table)
    write_json(json_path, {"export_dir": str(export_dir), "batch": batch, "rows": rows})
    failed = [row["backend"] for row in rows if not row["passed"]]
    if failed:
        raise ParityError(f"{', '.join(failed)} disagree with torch fp32 beyond tolerance (see the table)")


def _verdict(row: dict) -> str:
    if row["backend"] == "torch":
        return "reference"
    return "[green]pass[/]" if row["passed"] else "[red]FAIL[/]"
