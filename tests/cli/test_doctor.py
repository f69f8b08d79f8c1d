"""`vmddpm-deploy doctor`: what was built and loaded, also when the native library is missing."""

from __future__ import annotations

from tests.cli.runner import invoke


def test_doctor_reports_native_kernels():
    from vmddpm_deploy.ops import native_library

    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    expected = "native cpu" if native_library.available() else "not loaded"
    assert expected in result.output


def test_doctor_says_when_the_native_library_is_missing(monkeypatch, tmp_path):
    from vmddpm_deploy.ops import native_library

    monkeypatch.setenv("VMDDPM_OPS_LIB", str(tmp_path / "missing.so"))
    native_library.reset()
    try:
        result = invoke("doctor")
    finally:
        monkeypatch.delenv("VMDDPM_OPS_LIB")
        native_library.reset()
    assert result.exit_code == 0
    assert "not loaded" in result.output and "reference" in result.output
