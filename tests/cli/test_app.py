"""The `vmddpm-deploy` app itself: --version and help that reads like documentation."""

from __future__ import annotations

import pytest

from tests.cli.runner import error_line, invoke
from vmddpm_deploy import __version__


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"vmddpm-deploy {__version__}"


@pytest.mark.parametrize("command,phrase", [("init", "randomly initialised"), ("sample", "16-bit PNG")])
def test_help_reads_like_documentation(command, phrase):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert phrase in " ".join(result.output.split())
    assert "Example:" in result.output


@pytest.mark.parametrize(
    "args,phrase",
    [
        (("sample", "ckpt.pt", "--n", "ten"), "Invalid value for '--n'"),
        (("sample", "ckpt.pt", "--sampler", "ddim2"), "'ddim2' is not one of 'ddpm', 'ddim', 'dpm-solver++'"),
        (("sample",), "Missing argument 'source'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("init", "--no-such-option"), "No such option: --no-such-option"),
    ],
)
def test_values_click_cannot_parse_are_one_error_line(args, phrase):
    result = invoke(*args)
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith("error: ") and phrase in line


def test_no_arguments_prints_the_help():
    result = invoke()
    assert result.exit_code == 2 and "Usage:" in result.output and "sample" in result.output
