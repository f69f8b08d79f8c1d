"""`vmddpm-deploy doctor`: what was built and loaded, also when the native library is missing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.cli.runner import invoke


def test_doctor_reports_native_kernels():
    from vmddpm_deploy.ops import native_library

    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    expected = "native cpu" if native_library.available() else "not loaded"
    assert expected in result.output
    assert "cpu threads" in result.output and "torch threads on" in result.output and "load" in result.output


@pytest.mark.parametrize("library", ["missing", "a PNG"])
def test_doctor_says_when_the_native_library_is_missing_or_not_one(monkeypatch, tmp_path, library):
    from vmddpm_deploy.ops import native_library

    path = tmp_path / "libvmddpm_ops.so"
    if library == "a PNG":
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    monkeypatch.setenv("VMDDPM_OPS_LIB", str(path))
    native_library.reset()
    try:
        result = invoke("doctor")
    finally:
        monkeypatch.delenv("VMDDPM_OPS_LIB")
        native_library.reset()
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "not loaded" in result.output and "reference" in result.output
