"""Every command against bad inputs: missing, empty, truncated and wrong-type
files, a pickle that would run code, tampered graphs and manifests, zero / negative / huge counts,
malformed --shard, unwritable output, a full disk and Ctrl-C.

Each case gives exactly one `error:` line (no traceback), the documented exit code (README's
errors table), and leaves nothing half-written: the output path is absent, or a file that was
there before is byte-identical. The README's errors section lists this table.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.runner import invoke
from tests.host.artifacts import write_export_dir
from vmddpm_deploy.checkpoint import init_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.export.manifest import GraphRecord, file_record, read_manifest, write_manifest
from vmddpm_deploy.model import ModelConfig

MICRO = ModelConfig(image_size=8, base_channels=8, channel_mult=(1, 2), d_state=4, norm_groups=4)
BUNDLED_CKPT = "vmddpm_deploy/data/bundled/vmddpm_tiny_mni152.safetensors"


class RunsCode:
    """Unpickling this calls exec(), which creates the sentinel file: weights_only loading must refuse it."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"open({str(self.sentinel)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-inputs")
    checkpoint = init_checkpoint(MICRO, NoiseSchedule(), seed=0)
    ckpt = save_checkpoint(checkpoint, root / "micro.pt")
    png = root / "picture.pt"  # a PNG under a checkpoint's name
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    torch.save({"format": RunsCode(root / "SENTINEL")}, root / "evil.pt")
    (root / "not-json.json").write_text("{model: tiny")
    (root / "blocker").write_text("a regular file")
    (root / "empty-dir").mkdir()
    np.savez(root / "images.npz", images=np.zeros((4, 1, 8, 8), np.uint16))
    np.savez(root / "rgb-16.npz", images=np.zeros((4, 3, 16, 16), np.uint16))
    whole = (root / "images.npz").read_bytes()
    (root / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (root / "config32.json").write_text(json.dumps(MICRO.to_dict() | {"image_size": 32}))

    def export(name: str) -> Path:
        directory = write_export_dir(root / name, checkpoint, fp32_graph=b"graph")
        (directory / "denoiser.portable.onnx").write_bytes(b"portable graph")
        manifest = read_manifest(directory, verify=False)
        portable = GraphRecord("denoiser.portable.onnx", "portable", "float32",
                               **file_record(directory / "denoiser.portable.onnx"))
        write_manifest(dataclasses.replace(manifest, graphs={**manifest.graphs, "portable": portable}))
        return directory

    export("export")
    (export("tampered-graph") / "denoiser.portable.onnx").write_bytes(b"portable graph!")
    (export("tampered-fp32") / "denoiser.onnx").write_bytes(b"grapH")
    (export("not-json-manifest") / "manifest.json").write_text("{nope")
    manifest = export("truncated-manifest") / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:300])
    (export("empty-manifest") / "manifest.json").write_bytes(b"")
    (export("no-manifest") / "manifest.json").unlink()
    return {path.name: path for path in root.iterdir()} | {"root": root}


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple
    code: int
    phrase: str
    kind: str  # the input kind, as README's table names it

    def __str__(self) -> str:
        return f"{self.command}-{self.kind}-{' '.join(map(str, self.args))}"


def case(command, kind, code, phrase, *args):
    return Case(command, args, code, phrase, kind)


CHECKPOINT_FILES = [
    ("missing", "nothing.pt", "checkpoint not found"),
    ("empty", "empty.pt", "not a readable checkpoint"),
    ("truncated", "truncated.pt", "not a readable checkpoint"),
    ("wrong type (PNG)", "picture.pt", "not a readable checkpoint"),
    ("code-running pickle", "evil.pt", "never unpickled"),
]
TAMPERED_EXPORTS = [
    ("graph checksum mismatch", "tampered-graph", "does not match its sha256"),
    ("manifest not JSON", "not-json-manifest", "is not readable JSON"),
    ("manifest truncated", "truncated-manifest", "is not readable JSON"),
    ("manifest empty", "empty-manifest", "is not readable JSON"),
    ("no manifest", "no-manifest", "has no manifest.json"),
]
OUT = "{out}"  # a fresh path under the test's tmp_path; it must not exist afterwards

CASES = [
    # init
    case("init", "output under a file", 5, "cannot create", "-o", "{blocker}/ckpt.pt"),
    case("init", "output is a directory", 5, "is a directory", "-o", "{empty-dir}", "--force"),
    case("init", "existing output", 5, "already exists; pass --force", "-o", "{existing}"),
    # export
    *[case("export", kind, 4, phrase, "{%s}" % name, "-o", OUT) for kind, name, phrase in CHECKPOINT_FILES],
    case("export", "zero count", 2, "--batch-dim takes", "{micro.pt}", "-o", OUT, "--batch-dim", "0"),
    case("export", "negative count", 2, "--batch-dim takes", "{micro.pt}", "-o", OUT, "--batch-dim", "-2"),
    case("export", "huge count", 2, "--opset must be between", "{micro.pt}", "-o", OUT, "--opset", "10000"),
    case("export", "output under a file", 5, "cannot create", "{micro.pt}", "-o", "{blocker}/export"),
    case("export", "existing output", 5, "already exists; pass --force", "{micro.pt}", "-o", "{existing-dir}"),
    # check
    *[case("check", kind, 4, phrase, "{%s}" % name) for kind, name, phrase in CHECKPOINT_FILES],
    *[case("check", kind, 8, phrase, "{%s}" % name) for kind, name, phrase in TAMPERED_EXPORTS],
    case("check", "zero count", 2, "--batch must be at least 1 and at most", "{export}", "--batch", "0"),
    case("check", "negative count", 2, "--batch must be at least 1 and at most", "{export}", "--batch", "-3"),
    case("check", "huge count", 2, "--batch must be at least 1 and at most", "{export}", "--batch", "100000000"),
    case("check", "empty list", 2, "--backends needs at least one value", "{export}", "--backends", ","),
    # build-engine
    case("build-engine", "missing", 8, "export directory not found", "{nothing}"),
    case("build-engine", "wrong type (PNG)", 8, "export directory not found", "{picture.pt}"),
    case("build-engine", "graph checksum mismatch", 8, "does not match its sha256", "{tampered-fp32}"),
    *[case("build-engine", kind, 8, phrase, "{%s}" % name) for kind, name, phrase in TAMPERED_EXPORTS[1:]],
    case("build-engine", "zero count", 2, "--min-batch must be a positive integer", "{export}", "--min-batch", "0"),
    case("build-engine", "negative count", 2, "--max-batch must be a positive integer", "{export}", "--max-batch", "-8"),
    case("build-engine", "zero count", 2, "--workspace must be a positive number", "{export}", "--workspace", "0"),
    # sample
    *[case("sample", kind, 4, phrase, "{%s}" % name, "--out", OUT) for kind, name, phrase in CHECKPOINT_FILES],
    *[case("sample", kind, 8, phrase, "{%s}" % name, "--out", OUT) for kind, name, phrase in TAMPERED_EXPORTS],
    case("sample", "zero count", 2, "--n must be at least 1", "{micro.pt}", "--out", OUT, "--n", "0"),
    case("sample", "negative count", 2, "--n must be at least 1", "{micro.pt}", "--out", OUT, "--n", "-4"),
    case("sample", "zero count", 2, "steps must be at least 1", "{micro.pt}", "--out", OUT, "--steps", "0"),
    case("sample", "negative count", 2, "steps must be at least 1", "{micro.pt}", "--out", OUT, "--steps", "-1"),
    case("sample", "huge count", 2, "at most the schedule's 1000", "{micro.pt}", "--out", OUT, "--steps", "100000"),
    case("sample", "zero count", 2, "--batch-size must be at least 1", "{micro.pt}", "--out", OUT, "--batch-size", "0"),
    case("sample", "negative count", 2, "--batch-size must be at least 1", "{micro.pt}", "--out", OUT, "--batch-size", "-2"),
    *[case("sample", "malformed --shard", 2, "--shard", "{micro.pt}", "--out", OUT, "--shard", shard)
      for shard in ("", "0/2/3", "a/b", "1/0", "2/2", "-1/3", "1/")],
    case("sample", "output under a file", 5, "cannot create output directory", "{micro.pt}", "--out", "{blocker}/o"),
    case("sample", "output is a file", 5, "exists and is not a directory", "{micro.pt}", "--out", "{existing}"),
    # bench
    *[case("bench", kind, 4, phrase, "{%s}" % name) for kind, name, phrase in CHECKPOINT_FILES],
    *[case("bench", kind, 8, phrase, "{%s}" % name) for kind, name, phrase in TAMPERED_EXPORTS],
    case("bench", "zero count", 2, "--iters >= 1", "{micro.pt}", "--iters", "0"),
    case("bench", "negative count", 2, "--warmup must be >= 0", "{micro.pt}", "--warmup", "-1"),
    case("bench", "zero count", 2, "--batch-sizes takes positive integers", "{micro.pt}", "--batch-sizes", "1,0"),
    case("bench", "negative count", 2, "--batch-sizes takes positive integers", "{micro.pt}", "--batch-sizes", "-3"),
    case("bench", "zero count", 2, "steps must be at least 1", "{micro.pt}", "--steps", "0", "--backends", "torch"),
    case("bench", "huge count", 2, "at most the schedule's 1000", "{micro.pt}", "--steps", "99999", "--backends", "torch"),
    case("bench", "huge count", 2, "out of memory (tried to allocate", "{micro.pt}", "--backends", "torch",
         "--batch-sizes", "1000000000", "--warmup", "0", "--iters", "1"),
    case("bench", "output under a file", 5, "cannot write", "{micro.pt}", "--backends", "torch", "--batch-sizes", "1",
         "--warmup", "0", "--iters", "1", "--json", "{blocker}/bench.json"),
    # train
    case("train", "missing", 11, "does not exist", "--data", "{nothing}", "-o", OUT),
    case("train", "empty", 11, "no image, DICOM or NIfTI files", "--data", "{empty-dir}", "-o", OUT),
    case("train", "wrong type (not an image)", 11, "empty.pt", "--data", "{empty.pt}", "-o", OUT),
    case("train", "config not JSON", 3, "is not JSON", "--data", "bundled", "--config", "{not-json.json}", "-o", OUT),
    case("train", "config wrong type (PNG)", 3, "is not JSON", "--data", "bundled", "--config", "{picture.pt}", "-o", OUT),
    case("train", "config missing", 3, "cannot read --config", "--data", "bundled", "--config", "{nothing}", "-o", OUT),
    case("train", "zero count", 2, "--steps must be at least 1", "--data", "bundled", "--steps", "0", "-o", OUT),
    case("train", "negative count", 2, "--batch-size must be at least 1", "--data", "bundled", "--batch-size", "-1", "-o", OUT),
    case("train", "zero count", 2, "--checkpoint-every must be at least 1", "--data", "bundled", "--checkpoint-every", "0",
         "-o", OUT),
    case("train", "huge count", 2, "out of memory (tried to allocate", "--data", "bundled", "--config", "{config32.json}",
         "--steps", "1", "--batch-size", "1000000000000", "--device", "cpu", "-o", OUT),
    case("train", "output under a file", 5, "is a file, not a directory", "--data", "bundled", "--config",
         "{config32.json}", "--steps", "1", "-o", "{blocker}/ckpt.pt"),
    case("train", "existing output", 5, "already exists", "--data", "bundled", "-o", "{existing}"),
    # evaluate
    case("evaluate", "missing", 11, "does not exist", "{nothing}", "bundled"),
    case("evaluate", "empty", 11, "holds no PNG or NPZ images", "{empty-dir}", "bundled"),
    case("evaluate", "truncated", 11, "cannot read", "{truncated.npz}", "bundled"),
    case("evaluate", "wrong type (PNG)", 11, "is a file but not an .npz", "{picture.pt}", "bundled"),
    case("evaluate", "zero count", 2, "--n must be at least 1", "{images.npz}", "bundled", "--n", "0"),
    case("evaluate", "zero count", 2, "--batch-size must be at least 1", "{images.npz}", "bundled", "--batch-size", "0"),
    case("evaluate", "zero count", 2, "--kid-subsets >= 1", "{images.npz}", "bundled", "--kid-subsets", "0"),
    case("evaluate", "negative count", 2, "--kid-subset-size >= 2", "{images.npz}", "bundled", "--kid-subset-size", "-5"),
    case("evaluate", "zero count", 2, "--k must be at least 1", "{images.npz}", "bundled", "--metric", "prdc", "--k", "0"),
    case("evaluate", "too few images", 11, "PRDC with --k 5 needs at least 6", "{images.npz}", "bundled", "--metric", "prdc"),
    case("evaluate", "sizes differ", 11, "holds 8x8 grey images but", "{images.npz}", "{rgb-16.npz}"),
    case("evaluate", "missing --heldout", 2, "needs --heldout", "{images.npz}", "--memorization", "{images.npz}"),
    case("evaluate", "empty", 11, "holds no PNG or NPZ images", "{images.npz}", "--memorization", "{empty-dir}",
         "--heldout", "{images.npz}", "--out", OUT),
    case("evaluate", "zero count", 2, "--pairs must be at least 1", "{images.npz}", "--memorization", "{images.npz}",
         "--heldout", "{images.npz}", "--pairs", "0", "--out", OUT),
    case("evaluate", "output is a file", 5, "exists and is not a directory", "{images.npz}", "--memorization",
         "{images.npz}", "--heldout", "{images.npz}", "--out", "{existing}"),
    # demo
    *[case("demo", kind, 4, phrase, "--checkpoint", "{%s}" % name, "--out", OUT) for kind, name, phrase in CHECKPOINT_FILES],
    case("demo", "zero count", 2, "--n must be at least 2", "--n", "0", "--out", OUT),
    case("demo", "negative count", 2, "--n must be at least 2", "--n", "-2", "--out", OUT),
    case("demo", "zero count", 2, "steps must be at least 1", "--steps", "0", "--out", OUT),
    case("demo", "huge count", 2, "at most the schedule's 1000", "--steps", "5000", "--out", OUT),
    case("demo", "zero count", 2, "--batch-size must be at least 1", "--batch-size", "0", "--out", OUT),
    case("demo", "output under a file", 5, "cannot create output directory", "--out", "{blocker}/demo"),
    case("demo", "output is a file", 5, "exists and is not a directory", "--out", "{existing}"),
]


def fill(arg: str, names: dict[str, str]) -> str:
    """``{name}`` -> the path of that name (file names hold dots, so str.format does not do)."""
    return re.sub(r"\{([^{}]+)\}", lambda match: names[match.group(1)], arg)


def assert_one_error_line(result, code: int, phrase: str) -> str:
    """Exactly one `error:` line, the last one printed, with the phrase; no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    assert phrase in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("bad", CASES, ids=str)
def test_bad_input_is_one_line_and_its_exit_code(bad, files, tmp_path):
    existing = tmp_path / "existing"
    existing.write_bytes(b"precious bytes")
    existing_dir = tmp_path / "existing-dir"
    existing_dir.mkdir()
    (existing_dir / "manifest.json").write_text("{}")
    out = tmp_path / "out"
    names = {name: str(path) for name, path in files.items()} | {
        "out": str(out), "existing": str(existing), "existing-dir": str(existing_dir),
        "nothing": str(files["root"] / "nothing"), "nothing.pt": str(files["root"] / "nothing.pt"),
    }
    args = [fill(arg, names) for arg in bad.args]
    before = sorted(p.name for p in files["root"].iterdir())

    result = invoke(bad.command, *args)

    assert_one_error_line(result, bad.code, bad.phrase)
    assert not out.exists(), sorted(p.name for p in out.iterdir()) if out.is_dir() else "a file"
    assert existing.read_bytes() == b"precious bytes"
    assert [p.name for p in existing_dir.iterdir()] == ["manifest.json"]
    assert (existing_dir / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in files["root"].iterdir()) == before  # nothing written beside the inputs
    assert not (files["root"] / "SENTINEL").exists(), "the pickle ran code"


def test_the_code_running_pickle_really_runs_code_when_unpickled_unsafely(files, tmp_path):
    """The control for the sentinel: an ordinary (unsafe) torch.load of evil.pt does create it."""
    sentinel = tmp_path / "SENTINEL"
    unsafe = tmp_path / "evil.pt"
    torch.save({"format": RunsCode(sentinel)}, unsafe)
    torch.load(unsafe, weights_only=False)
    assert sentinel.exists()


def test_sample_huge_n_is_one_line(files, tmp_path):
    out = tmp_path / "out"
    result = invoke("sample", files["micro.pt"], "--n", 10**20, "--steps", 1, "--out", out)
    assert_one_error_line(result, 2, "--n")
    assert not out.exists()


@pytest.mark.parametrize("state", ["code-running pickle", "truncated"])
def test_train_resume_from_a_bad_train_state(files, tmp_path, state):
    out = tmp_path / "ckpt.pt"
    out.write_bytes(b"previous checkpoint")
    sentinel = tmp_path / "SENTINEL"
    path = out.with_name("ckpt.pt.train-state")
    if state == "truncated":
        torch.save({"format": "vmddpm-deploy-train-state/1", "losses": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        torch.save({"format": RunsCode(sentinel)}, path)
    result = invoke("train", "--data", "bundled", "-o", out, "--resume", "--device", "cpu")
    assert_one_error_line(result, 4, "is not a readable train state")
    assert not sentinel.exists()
    assert out.read_bytes() == b"previous checkpoint"


def test_doctor_with_a_bad_ops_setting(monkeypatch):
    monkeypatch.setenv("VMDDPM_OPS", "fastest")
    assert_one_error_line(invoke("doctor"), 3, "VMDDPM_OPS='fastest' is not one of")


# --- full disk and Ctrl-C: raised from inside the library, in-process ----------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


FAST_SAMPLE = ("--n", "2", "--steps", "1", "--batch-size", "2")
WRITERS = {  # command line whose output is {out}, or a pre-existing {existing} it would replace
    "init": ("init", "-o", "{existing}", "--force"),
    "export": ("export", "{micro.pt}", "-o", "{existing-dir}", "--force", "--ops", "portable", "--dtype", "fp32"),
    "sample": ("sample", "{micro.pt}", *FAST_SAMPLE, "--out", "{out}"),
    "bench": ("bench", "{micro.pt}", "--backends", "torch", "--batch-sizes", "1", "--warmup", "0", "--iters", "1",
              "--json", "{existing}"),
    "train": ("train", "--data", "bundled", "--config", "{config32.json}", "--steps", "1", "--batch-size", "2",
              "--device", "cpu", "-o", "{existing}", "--force"),
    "demo": ("demo", "--checkpoint", "{micro.pt}", "--no-export", "--n", "2", "--n-real", "2", "--steps", "1",
             "--out", "{out}"),
}


def _expand(args, files, tmp_path):
    existing = tmp_path / "existing"
    existing.write_bytes(b"precious bytes")
    existing_dir = tmp_path / "existing-dir"
    existing_dir.mkdir()
    (existing_dir / "manifest.json").write_text("{}")
    names = {name: str(path) for name, path in files.items()} | {
        "out": str(tmp_path / "out"), "existing": str(existing), "existing-dir": str(existing_dir)}
    return [fill(arg, names) for arg in args]


def _nothing_written(tmp_path):
    out = tmp_path / "out"
    if out.exists():  # the output directory may have been made; no file may be in it
        leftovers = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers
    assert (tmp_path / "existing").read_bytes() == b"precious bytes"
    assert [p.name for p in (tmp_path / "existing-dir").iterdir()] == ["manifest.json"]
    temporary = [p.name for p in tmp_path.rglob(".*tmp*")]
    assert temporary == [], temporary


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_full_disk_is_one_line_and_replaces_nothing(command, files, tmp_path, monkeypatch):
    args = _expand(WRITERS[command], files, tmp_path)
    monkeypatch.setattr(os, "fsync", disk_full)  # every write_atomic and the export's staging flush here
    if command == "export":
        import onnx

        monkeypatch.setattr(onnx, "save_model", lambda *a, **k: disk_full())
    result = invoke(*args)
    assert_one_error_line(result, 5, "No space left on device")
    _nothing_written(tmp_path)


INTERRUPT_POINTS = {  # where the library is interrupted: (module, attribute)
    "init": ("vmddpm_deploy.checkpoint", "init_checkpoint"),
    "export": ("vmddpm_deploy.export.exporter", "trace_denoiser"),
    "check": ("vmddpm_deploy.runtime.parity", "check_inputs"),
    "build-engine": ("vmddpm_deploy.tensorrt.engine_builder", "EngineBuilder.build"),
    "sample": ("vmddpm_deploy.model.vmddpm", "VMDDPM.forward"),
    "bench": ("vmddpm_deploy.model.vmddpm", "VMDDPM.forward"),
    "train": ("vmddpm_deploy.model.vmddpm", "VMDDPM.forward"),
    "evaluate": ("vmddpm_deploy.evaluation.metrics", "extract_features"),
    "demo": ("vmddpm_deploy.model.vmddpm", "VMDDPM.forward"),
    "doctor": ("vmddpm_deploy.ops.native_library", "describe"),
}
INTERRUPTED = {
    "init": ("init", "-o", "{existing}", "--force"),
    "export": ("export", "{micro.pt}", "-o", "{existing-dir}", "--force"),
    "check": ("check", "{export}", "--checkpoint", "{micro.pt}"),
    "build-engine": ("build-engine", "{export}"),
    "evaluate": ("evaluate", "{images.npz}", "{images.npz}", "--no-cache"),
    "doctor": ("doctor",),
    **{name: WRITERS[name] for name in ("sample", "bench", "train", "demo")},
}


@pytest.mark.parametrize("command", sorted(INTERRUPTED))
def test_ctrl_c_exits_130_with_one_line(command, files, tmp_path, monkeypatch):
    import importlib

    module_name, attribute = INTERRUPT_POINTS[command]
    target = importlib.import_module(module_name)
    owner_name, _, name = attribute.rpartition(".")
    owner = getattr(target, owner_name) if owner_name else target
    if command == "build-engine":
        pytest.importorskip("tensorrt", reason="build-engine stops at 'TensorRT is not installed' before any work")
    monkeypatch.setattr(owner, name, interrupt)
    result = invoke(*_expand(INTERRUPTED[command], files, tmp_path))
    assert result.exit_code == 130, result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted:") and sum(line.startswith("interrupted") for line in lines) == 1
    assert "Traceback" not in result.output and not any(line.startswith("error:") for line in lines)
    _nothing_written(tmp_path)
