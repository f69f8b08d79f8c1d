"""The ``vmddpm-deploy`` command line: thin Typer commands over the library, one module per command.

Every expected failure is a :class:`~vmddpm_deploy.errors.VmddpmError`; ``reports_errors`` (in
:mod:`vmddpm_deploy.cli.app`) turns it into one ``error: ...`` line on stderr and the family's exit
code. A new command is a module here that registers on ``app`` and is imported below.
"""

from __future__ import annotations

from vmddpm_deploy.cli import (  # noqa: F401  (register the commands)
    bench,
    build_engine,
    check,
    convert,
    demo,
    doctor,
    evaluate,
    export,
    init,
    sample,
    train,
    tune_schedule,
)
from vmddpm_deploy.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
