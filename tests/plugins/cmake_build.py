"""Configure and build a CMake project from a test, with a failure message that shows why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_tools(*tools: str) -> None:
    """Skip the calling test unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found on PATH")


def cmake_build(
    source: Path,
    build: Path,
    definitions: dict[str, str] | None = None,
    targets: list[str] | None = None,
    timeout: int = 600,
) -> None:
    """``cmake -S source -B build -D...`` then ``cmake --build build [--target ...]``; fails the test on error."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(source), "-B", str(build), *generator]
    configure += [f"-D{key}={value}" for key, value in (definitions or {}).items()]
    compile_ = ["cmake", "--build", str(build), "--parallel", *(["--target", *targets] if targets else [])]
    for command in (configure, compile_):
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
