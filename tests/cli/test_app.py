"""The `vmddpm-deploy` app itself: --version and help that reads like documentation."""

from __future__ import annotations

import pytest

from tests.cli.runner import invoke
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
