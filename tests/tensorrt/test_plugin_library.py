"""Finding libvmddpm_trt_plugins and copying it beside a plan (no TensorRT needed)."""

from __future__ import annotations

import pytest

from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import BackendUnavailableError
from vmddpm_deploy.tensorrt.engine_builder import copy_plugin_library
from vmddpm_deploy.tensorrt.plugin_library import (
    ENV_VAR,
    PLUGIN_LIBRARY_FILENAME,
    find_plugin_library,
    plugin_library_candidates,
)


def test_explicit_path_is_the_only_one_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    library = tmp_path / "libcustom.so"
    library.write_bytes(b"x")
    assert find_plugin_library(library) == library
    with pytest.raises(BackendUnavailableError, match=r"plugin library .*missing\.so not found \(--plugin-lib\); build it"):
        find_plugin_library(tmp_path / "missing.so")


def test_environment_variable_overrides_the_search(tmp_path, monkeypatch):
    library = tmp_path / "from-env.so"
    monkeypatch.setenv(ENV_VAR, str(library))
    assert plugin_library_candidates() == [library]
    with pytest.raises(BackendUnavailableError, match=f"not found \\(looked in {ENV_VAR}="):
        find_plugin_library()
    library.write_bytes(b"x")
    assert find_plugin_library() == library


def test_default_search_covers_the_package_and_the_build_tree(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    candidates = plugin_library_candidates()
    assert all(path.name == PLUGIN_LIBRARY_FILENAME for path in candidates)
    assert any(path.parent.name == "_native" for path in candidates)
    assert any(path.parent.name == "build" for path in candidates)


def test_copy_beside_the_plan_is_atomic_and_skips_identical_bytes(tmp_path):
    built = tmp_path / "build" / "libvmddpm_trt_plugins.so"
    built.parent.mkdir()
    built.write_bytes(b"plugins v1")
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    copy = copy_plugin_library(built, export_dir)
    assert copy == export_dir / PLUGIN_LIBRARY_FILENAME and sha256_file(copy) == sha256_file(built)
    mtime = copy.stat().st_mtime_ns
    assert copy_plugin_library(built, export_dir) == copy and copy.stat().st_mtime_ns == mtime
    built.write_bytes(b"plugins v2")
    copy_plugin_library(built, export_dir)
    assert copy.read_bytes() == b"plugins v2"
    assert sorted(p.name for p in export_dir.iterdir()) == [PLUGIN_LIBRARY_FILENAME]  # no temporary left behind
