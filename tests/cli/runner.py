"""The CLI run in-process as a user runs it (Typer's CliRunner), and its one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from vmddpm_deploy.cli import app

runner = CliRunner()


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The one line a failed command printed (asserts there is exactly one, and no traceback)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.output!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]
