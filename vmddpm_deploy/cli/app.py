"""The Typer app every command module registers on, and what commands share: error reporting,
consoles, progress bars, option parsing and the choice enums (derived from the library's lists)."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
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

from vmddpm_deploy import __version__, choices as names
from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.errors import InvalidArgumentError, VmddpmError

console = Console(stderr=True)


def print_error(message: str) -> None:
    # escape(): messages quote paths and commands ("vmddpm-deploy[tensorrt]") that rich would eat as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    """One ``note:`` line on stderr: something the user should know that does not stop the command."""
    console.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


#: click's ClickException, of the click that Typer runs on (Typer >= 0.29 carries its own copy of
#: click, so the name is reached through a public Typer exception rather than ``import click``).
_CLICK_EXCEPTION = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")


class OneLineUsageErrors(TyperGroup):
    """Click reports a value it cannot parse (``--n ten``, an unknown ``--sampler``, a missing SRC)
    in a usage box of several lines; here it is one ``error:`` line and exit 2, like every other
    bad input. Help (``--help``, or no arguments at all) prints as usual."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _CLICK_EXCEPTION as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # the help text itself
            else:
                print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)  # typer.Exit(code) arrives as its code


class PlainHelpCommand(TyperCommand):
    """Help written as Unix tools write it: ``Usage: vmddpm-deploy export [OPTIONS] CHECKPOINT`` and
    no value type beside a flag. (Typer 0.29 writes ``{checkpoint}`` for a required argument and
    ``<bool>`` beside every flag, which reads as if the flag took a value.)"""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def _plain_metavars(params: list[Any]) -> list[Any]:
    """Flags show no value type; an argument is named in capitals (``SOURCE``), in help and errors alike."""
    for param in params:
        if param.metavar is None and isinstance(param, TyperArgument):
            param.metavar = param.name.upper()
        elif param.metavar is None and getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class VmddpmTyper(typer.Typer):
    """A Typer app whose commands are :class:`PlainHelpCommand` unless a command names its class."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or PlainHelpCommand, **kwargs)


app = VmddpmTyper(
    name="vmddpm-deploy",
    help="Export, accelerate and sample VM-DDPM (Vision Mamba diffusion) medical image models.",
    cls=OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def reports_errors(command):
    """Turn library errors into one line and an exit code (and Ctrl-C into exit 130)."""

    def fail(exc: VmddpmError):
        print_error(str(exc))
        return typer.Exit(exc.exit_code)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VmddpmError as exc:
            raise fail(exc) from None
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise fail(out_of_memory_error(exc)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: files written so far are complete")
            raise typer.Exit(130) from None

    return wrapper


def _out_of_memory(exc: BaseException) -> bool:
    """A host or GPU allocation failed (torch raises RuntimeError on the CPU, OutOfMemoryError on CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def out_of_memory_error(exc: BaseException) -> InvalidArgumentError:
    """A count too large for this machine's memory is an argument out of range (exit 2)."""
    tried = re.search(r"tried to allocate ([0-9.]+ ?[A-Za-z]+)", str(exc), re.IGNORECASE)  # CUDA: "Tried"
    detail = f" (tried to allocate {tried.group(1)})" if tried else ""
    return InvalidArgumentError(
        f"out of memory{detail}; lower the batch size or count given (--batch-size, --batch-sizes, "
        f"--batch, --n)"
    )


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


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of ``values`` for Typer's choice options.

    Every choice list is defined once, in :mod:`vmddpm_deploy.choices` (torch-free, so that
    ``--help`` does not load torch); the CLI only derives its enums, so a new sampler, scan order
    or format needs no CLI change.
    """
    return Enum(name, {value: value for value in values}, type=str)


Preset = choices("Preset", names.PRESET_NAMES)
ScanOrder = choices("ScanOrder", names.SCAN_ORDERS)
ScheduleKind = choices("ScheduleKind", names.SCHEDULE_KINDS)
SamplerName = choices("SamplerName", names.SAMPLERS)
ImageFormat = choices("ImageFormat", names.IMAGE_FORMATS)
Backend = choices("Backend", names.SAMPLING_BACKENDS)
Spacing = choices("Spacing", names.TIMESTEP_SPACINGS)
Precision = choices("Precision", names.SAMPLING_PRECISIONS)

#: The defaults the CLI shows are the library's own.
DEFAULT_PRESET = Preset(names.DEFAULT_PRESET)
DEFAULT_SCAN_ORDER = ScanOrder(names.DEFAULT_SCAN_ORDER)
DEFAULT_SCHEDULE = ScheduleKind(names.DEFAULT_SCHEDULE_KIND)
DEFAULT_SAMPLER_NAME = SamplerName(names.DEFAULT_SAMPLER)
DEFAULT_STEPS = names.DEFAULT_STEPS


def wide_console() -> Console:
    """stdout console that does not squeeze tables into 80 columns when piped to a file."""
    return Console(width=max(Console().width, 120))


class _Progress(Progress):
    """rich's Progress, less the empty line its ``stop`` prints on a console that is not a terminal
    (a log file, a pipe) when the bar never started or leaves nothing behind (``transient``, or no
    task yet): an ``error:`` line after it would follow a stray blank line."""

    def stop(self) -> None:
        if self.live.transient or not self.tasks:
            self.live.stop()  # nothing when never started
        else:
            super().stop()


def progress_bar(quiet: bool = False, transient: bool = False) -> Progress:
    """``transient``: the bar disappears when done (or failed), e.g. before a summary table."""
    return _Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=transient,
    )


@contextmanager
def progress_callback(description: str, quiet: bool = False) -> Iterator[Callable[[float, float], None]]:
    """A ``report(done, total)`` callback drawing a progress bar from its first call on, so that an
    error during set-up prints alone, without an empty bar above it."""
    progress = progress_bar(quiet)
    task = None

    def report(done: float, total: float) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(description, total=total, completed=done)
        else:
            progress.update(task, completed=done, total=total)

    try:
        yield report
    finally:
        progress.stop()


#: ``--json PATH`` is one convention in every command that reports a result (evaluate, check, bench):
#: the result also goes to PATH as JSON, or with ``--json -`` to stdout instead of the text.
JSON_HELP = "Also write the result as JSON to this file; '-' prints the JSON to stdout instead of the text."


def json_to_stdout(target: Path | None) -> bool:
    """Whether ``--json`` asks for the JSON on stdout (``-``) rather than text."""
    return target is not None and str(target) == "-"


def write_json(target: Path | None, payload: dict[str, Any]) -> None:
    """``--json``: ``payload`` to file ``target`` (atomically), to stdout for ``-``, nowhere for None."""
    if json_to_stdout(target):
        typer.echo(json.dumps(payload))
    elif target is not None:
        data = (json.dumps(payload, indent=2) + "\n").encode()
        write_atomic(target, lambda handle: handle.write(data))


def resolve_device(text: str):
    """``--device``: auto (cuda when PyTorch sees a GPU, else cpu), cpu, cuda, cuda:N; one error line otherwise."""
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InvalidArgumentError(f"--device {text!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"--device {text}: no CUDA GPU is visible to PyTorch; use --device cpu")
    return device


def parse_csv(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidArgumentError(f"{option} needs at least one value")
    return items


def parse_positive_int(text: str, option: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgumentError(f"{option} takes positive integers, got {text!r}")
    return int(text)


