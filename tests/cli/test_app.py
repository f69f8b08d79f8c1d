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
        (("sample", "ckpt.pt", "--sampler", "ddim2"), "'ddim2' is not one of 'ddpm', 'ddim', 'ddim-ab2', 'ddim-ab3', 'dpm-solver++'"),
        (("sample",), "Missing argument 'SOURCE'"),
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


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (a subprocess: this one has torch)."""
    import json
    import subprocess
    import sys

    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_torch():
    # --help and --version must not wait seconds for torch: every choice list is torch-free.
    modules = _modules_after("import vmddpm_deploy.cli")
    assert "vmddpm_deploy.cli.sample" in modules  # the commands did register
    assert not {"torch", "numpy", "onnx"} & modules


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["sample", "--help"], ["train", "--help"],
                                  ["tune-schedule", "--help"]])
def test_help_and_version_load_no_torch(args):
    code = (
        "import sys\nfrom vmddpm_deploy.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    assert "torch" not in _modules_after(code)


@pytest.mark.parametrize("command,usage", [("export", "[OPTIONS] CHECKPOINT"), ("evaluate", "[OPTIONS] GENERATED [REAL]"),
                                           ("sample", "[OPTIONS] SOURCE")])
def test_usage_names_arguments_in_capitals_and_flags_take_no_value(command, usage):
    output = invoke(command, "--help").output
    assert f"Usage: vmddpm-deploy {command} {usage}" in output
    flags = [line for line in output.splitlines() if "--help" in line or "--quiet" in line or "--force" in line]
    assert flags and not any("<bool>" in line for line in flags)
    assert "<bool>" not in invoke("--help").output


@pytest.mark.parametrize("command", ["export", "demo"])
def test_an_error_after_a_progress_bar_is_the_first_line(tmp_path, command):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    args = ("export", bad, "-o", tmp_path / "x") if command == "export" else ("demo", "--checkpoint", bad, "--out", tmp_path / "d")
    result = invoke(*args)
    assert result.exit_code == 4
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, repr(result.output)
