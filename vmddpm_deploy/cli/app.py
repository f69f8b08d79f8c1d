"""The Typer app every command module registers on, and what commands share: error reporting,
consoles, progress bars, option parsing and the choice enums."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vmddpm_deploy import __version__
from vmddpm_deploy.errors import InvalidArgumentError, VmddpmError

app = typer.Typer(
    name="vmddpm-deploy",
    help="Export, accelerate and sample VM-DDPM (Vision Mamba diffusion) medical image models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def reports_errors(command):
    """Turn library errors into one line and an exit code (and Ctrl-C into exit 130)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VmddpmError as exc:
            # escape(): messages quote paths and commands ("vmddpm-deploy[tensorrt]") that rich would eat as markup.
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: files written so far are complete")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vmddpm-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Export, accelerate and sample VM-DDPM medical image diffusion models.

    Start with `init` (or a trained checkpoint), then `sample`.
    """


class Preset(str, Enum):
    tiny = "tiny"
    small = "small"
    base = "base"
    large = "large"


class ScanOrder(str, Enum):
    cross = "cross"
    regen = "regen"


class ScheduleKind(str, Enum):
    linear = "linear"
    cosine = "cosine"


class SamplerName(str, Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    dpm_solver = "dpm-solver++"


class ImageFormat(str, Enum):
    png = "png"
    npz = "npz"
    nifti = "nifti"
    nifti_volume = "nifti-volume"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


def wide_console() -> Console:
    """stdout console that does not squeeze tables into 80 columns when piped to a file."""
    return Console(width=max(Console().width, 120))


def progress_bar(quiet: bool = False, transient: bool = False) -> Progress:
    """``transient``: the bar disappears when done (or failed), e.g. before a summary table."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=transient,
    )


def parse_csv(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidArgumentError(f"{option} needs at least one value")
    return items


def parse_positive_int(text: str, option: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgumentError(f"{option} takes positive integers, got {text!r}")
    return int(text)


