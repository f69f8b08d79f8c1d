"""`vmddpm-deploy init`: a loadable checkpoint, no silent overwrite, usage errors."""

from __future__ import annotations

from tests.cli.runner import error_line, invoke
from vmddpm_deploy.checkpoint import load_checkpoint


def test_init_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "ckpt.pt"
    result = invoke("init", "--preset", "tiny", "--scan-order", "cross", "-o", out)
    assert result.exit_code == 0, result.output
    assert "3.48 M parameters" in result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.config.scan_order == "cross" and checkpoint.config.image_size == 32


def test_init_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"precious")
    result = invoke("init", "-o", out)
    assert result.exit_code == 5
    assert "already exists; pass --force" in error_line(result)
    assert out.read_bytes() == b"precious"


def test_init_unknown_preset_is_a_usage_error(tmp_path):
    result = invoke("init", "--preset", "huge", "-o", tmp_path / "c.pt")
    assert result.exit_code == 2
    assert "huge" in result.output and "is not one of" in " ".join(result.output.split())
    assert not (tmp_path / "c.pt").exists()
