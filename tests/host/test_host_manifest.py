"""vmddpm_host's JSON reader and manifest.json reading, against Python's json module."""

from __future__ import annotations

import json
import math

import pytest

from tests.host.artifacts import export_manifest, manifest_data, write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export.manifest import EngineRecord, write_manifest
from vmddpm_deploy.model import ModelConfig

ENGINE = {
    "graph": "fp16", "precision": "fp16", "min_batch": 1, "opt_batch": 8, "max_batch": 32,
    "tensorrt": "10.14.1.48", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
    "sha256": "ab" * 32, "bytes": 123, "plugin_library": "libvmddpm_trt_plugins.so", "plugin_library_sha256": "cd" * 32,
}


@pytest.fixture
def checkpoint():
    config = ModelConfig(image_size=16, in_channels=3, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
    return init_checkpoint(config, NoiseSchedule(kind="cosine", num_train_timesteps=500), seed=0)


def test_info_reads_what_python_wrote(host, checkpoint, tmp_path):
    write_manifest(export_manifest(tmp_path, checkpoint).with_engine("denoiser.fp16.b1-32.trt10.14.sm90.plan",
                                                                     EngineRecord(**ENGINE)))
    result = host.run("info", "--export-dir", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["x"], info["t"], info["eps"]) == ("x", "t", "eps")
    assert info["shape"] == [3, 16, 16] and info["num_train_timesteps"] == 500
    # Every float64 of the table survives Python's repr -> the host's reader -> %.17g unchanged.
    assert info["alphas_cumprod"] == checkpoint.schedule.alphas_cumprod.tolist()
    assert info["engines"] == [
        {"file": "denoiser.fp16.b1-32.trt10.14.sm90.plan", "precision": "fp16", "batch": [1, 8, 32],
         "tensorrt": "10.14.1.48", "compute_capability": "9.0", "plugin_library": "libvmddpm_trt_plugins.so"}
    ]


def test_info_summary_is_short_and_says_what_the_build_runs(host, checkpoint, tmp_path):
    write_manifest(export_manifest(tmp_path, checkpoint).with_engine("denoiser.fp16.b1-32.trt10.14.sm90.plan",
                                                                     EngineRecord(**ENGINE)))
    result = host.run("info", "--export-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and "alphas_cumprod" not in result.stdout
    assert lines[1].startswith("model        ") and "image_size=16" in lines[1] and "channel_mult=1,2" in lines[1]
    assert lines[2] == "image        3 x 16 x 16 (C x H x W); 500 train timesteps"
    assert lines[3] == ("engines      denoiser.fp16.b1-32.trt10.14.sm90.plan: fp16, batch 1..32, TensorRT 10.14.1.48, "
                        "compute capability 9.0")
    # This test build has no TensorRT (tests/host/conftest.py configures without its headers).
    assert lines[4] == "tensorrt     not compiled in: sample runs --replay only"


def test_cmake_configure_says_whether_the_tensorrt_denoiser_is_on(tmp_path):
    import subprocess

    from tests.host.conftest import HOST_SOURCE
    from tests.plugins.cmake_build import require_tools

    require_tools("cmake")
    result = subprocess.run(["cmake", "-S", str(HOST_SOURCE), "-B", str(tmp_path)], capture_output=True, text=True,
                            check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "vmddpm_host: TensorRT denoiser OFF (set VMDDPM_HOST_TENSORRT_INCLUDE_DIR to build it)" in result.stdout


def _broken(data: dict, path: str, value) -> dict:
    """``data`` with the member at dotted ``path`` set to ``value`` (deleted when value is ...)."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "path,value,phrase",
    [
        ("format", "vmddpm-deploy-export/2", 'has format "vmddpm-deploy-export/2"'),
        ("schedule.alphas_cumprod", ..., 'schedule has no member "alphas_cumprod"'),
        ("schedule.num_train_timesteps", 999, "has 500 values, num_train_timesteps says 999"),
        ("inputs.0.shape", ["batch", 3, 16], "inputs[0].shape must have 4 dimensions"),
        ("outputs.0.name", 7, "outputs[0].name must be a string, found a number"),
        ("inputs.0.shape.2", 16.5, "inputs[0].shape[2] must be an integer"),
        ("timesteps", [0, 400], "timesteps: timesteps must be distinct and descending"),
        ("timesteps", [300, 300], "timesteps: timesteps must be distinct and descending"),
        ("timesteps", [600, 0], "timesteps must lie in [0, 499], got 600"),
        ("timesteps", [], "timesteps must list at least one timestep"),
        ("timesteps", [400.5, 0], "timesteps[0] must be an integer"),
    ],
)
def test_bad_manifest_fields_are_named(host, checkpoint, tmp_path, path, value, phrase):
    data = _broken(manifest_data(checkpoint), path, value)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    result = host.run("info", "--export-dir", tmp_path)
    assert result.returncode == 8
    assert result.stderr.count("\n") == 1 and phrase in result.stderr and "re-export" in result.stderr


def test_alpha_bar_out_of_range_is_refused(host, checkpoint, tmp_path):
    data = manifest_data(checkpoint)
    data["schedule"]["alphas_cumprod"][3] = 1.5
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    result = host.run("info", "--export-dir", tmp_path)
    assert result.returncode == 8 and "schedule.alphas_cumprod[3] must lie in (0, 1)" in result.stderr


def test_missing_manifest(host, tmp_path):
    result = host.run("info", "--export-dir", tmp_path)
    assert result.returncode == 8 and "has no manifest.json" in result.stderr


DOCUMENTS = [
    {"a": [1, -2, 3.5, -0.0, 1e-300, 2.5e300, 123456789012345678, -9007199254740993], "b": None, "c": [True, False]},
    {"escapes": "quote \" backslash \\ slash / \b\f\n\r\t \u0001 \u00e9 \u4e2d \U0001f600", "": {}},
    [[], [[[]]], {}, "", 0, 0.1, 1 / 3, math.pi, 5e-324, 1.7976931348623157e308],
]


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_json_reader_round_trips_python_json(host, tmp_path, index, ensure_ascii):
    document = DOCUMENTS[index]
    source = tmp_path / "doc.json"
    source.write_text(json.dumps(document, ensure_ascii=ensure_ascii, indent=1), encoding="utf-8")
    result = host.run(source, program=host.json_roundtrip)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(source.read_text(encoding="utf-8"))


def test_json_reader_reads_numbers_as_integers_or_floats(host, tmp_path):
    source = tmp_path / "doc.json"
    source.write_text('[1, 1.0, 1e2, -0, 9223372036854775807, 9223372036854775808]')
    result = host.run(source, program=host.json_roundtrip)
    # Integers stay integers up to int64; a fraction, an exponent or a larger integer is a float64.
    assert result.stdout.strip() == "[1,1,100,0,9223372036854775807,9.2233720368547758e+18]"


def test_json_reader_keeps_the_last_of_repeated_keys(host, tmp_path):
    source = tmp_path / "doc.json"
    source.write_text('{"dup": 1, "other": [], "dup": 2}')
    result = host.run(source, program=host.json_roundtrip)
    assert result.stdout.strip() == '{"dup":2,"other":[]}'


@pytest.mark.parametrize(
    "text,where",
    [
        ('{"a": 1,}', "line 1, column 9: expected a string key"),
        ('{"a" 1}', "line 1, column 6: expected ':'"),
        ('[1, 2\n, 3', "line 2, column 4: expected ',' or ']'"),
        ('{"a": "b\nc"}', "line 1, column 9: control character"),
        ('{"a": 01}', "line 1, column 8: expected ',' or '}'"),
        ('{"a": NaN}', "line 1, column 7: unexpected character 'N'"),
        ('{"a": 1e999}', "line 1, column 7: number out of range"),
        ('"\\ud800"', "unpaired surrogate"),
        ('[1] [2]', "line 1, column 5: unexpected text after the JSON value"),
        ("[" * 200, "nesting deeper than 128 levels"),
        ("", "unexpected end of input"),
    ],
)
def test_json_reader_says_where_a_document_breaks(host, tmp_path, text, where):
    source = tmp_path / "doc.json"
    source.write_text(text)
    result = host.run(source, program=host.json_roundtrip)
    assert result.returncode == 1 and where in result.stderr, result.stderr


def test_info_on_a_manifest_that_is_not_json(host, tmp_path, checkpoint):
    write_export_dir(tmp_path, checkpoint)
    text = (tmp_path / "manifest.json").read_text()
    (tmp_path / "manifest.json").write_text(text[: len(text) // 2])
    result = host.run("info", "--export-dir", tmp_path)
    assert result.returncode == 8 and "is not valid JSON (line " in result.stderr
