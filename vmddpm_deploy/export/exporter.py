"""``export_checkpoint``: a checkpoint in, an export directory out (docs/design.md section 3).

Pipeline, one stage per graph: ``torch.export`` traces the denoiser once per precision (the
``vmddpm::`` custom ops stay single nodes thanks to their fake kernels), then
``torch.onnx.export(dynamo=True, custom_translation_table=...)`` lowers the same program to
ONNX twice, with the custom-node translations (``denoiser.onnx``) and the standard-op ones
(``denoiser.portable.onnx``); the fp16 graph is the fp16 policy model (:mod:`.fp16`) lowered
with the custom-node translations. Every graph passes ``onnx.checker.check_model(full_check=
True)`` before the manifest is written, all in a staging directory beside the target that is
renamed into place at the end: an interrupted export leaves the previous directory intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnx
import torch

from vmddpm_deploy import __version__
from vmddpm_deploy.checkpoint import build_model, checkpoint_sha256, load_checkpoint
from vmddpm_deploy.choices import EXPORT_OPS, PRECISIONS
from vmddpm_deploy.diffusion.schedule import check_timesteps
from vmddpm_deploy.errors import ExportError, InvalidArgumentError, OutputError
from vmddpm_deploy.export.fp16 import half_precision
from vmddpm_deploy.export.manifest import (
    BATCH_AXIS,
    GRAPH_FILES,
    GraphRecord,
    Manifest,
    SourceRecord,
    file_record,
    new_manifest,
    read_manifest,
    write_manifest,
)
from vmddpm_deploy.export.onnx_functions import register_schemas, translation_table
from vmddpm_deploy.model import VMDDPM

#: torch.onnx's dynamo exporter builds opset 18 graphs natively and converts them up to 25 with
#: onnxscript's version converter (0.7); beyond that it falls back to onnx's C converter and
#: writes graphs ONNX Runtime 1.31 refuses to load.
MIN_OPSET, MAX_OPSET = 18, 25
EXPORTER = "torch.onnx.export(dynamo=True)"

#: (graph kind, ops, precision) in export order; which are built follows ``dtypes`` and ``ops``.
GRAPHS = (("fp32", "plugin", "fp32"), ("portable", "portable", "fp32"), ("fp16", "plugin", "fp16"))
IO_DTYPES = {"fp32": "float32", "fp16": "float16"}

OnStage = Callable[[str, int, int], None]


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    dtypes: Sequence[str] = PRECISIONS,
    ops: Sequence[str] = EXPORT_OPS,
    opset: int = MIN_OPSET,
    batch_dim: str | int = "dynamic",
    force: bool = False,
    on_stage: OnStage | None = None,
    timesteps: Sequence[int] | None = None,
) -> Manifest:
    """Export ``checkpoint_path`` to ``out_dir`` (default ``exports/<checkpoint stem>``).

    ``dtypes`` (fp32, fp16) x ``ops`` (plugin, portable) pick the graphs: ``denoiser.onnx`` is
    fp32 + plugin, ``denoiser.fp16.onnx`` fp16 + plugin, ``denoiser.portable.onnx`` fp32 +
    portable (the portable graph exists in fp32 only). ``batch_dim`` is ``"dynamic"`` or a fixed
    batch size. ``on_stage(description, index, total)`` is called as each stage starts.
    ``timesteps`` (a ``tune-schedule`` file's) are recorded for the C++ host to sample at.
    Returns the verified manifest of the written directory.
    """
    checkpoint_path = Path(checkpoint_path)
    out_dir = Path(out_dir) if out_dir is not None else Path("exports") / checkpoint_path.stem
    graphs = _graphs_for(dtypes, ops)
    fixed_batch = _parse_batch_dim(batch_dim)
    _check_opset(opset)
    _check_target(out_dir, force)

    stages = ["load checkpoint"] + [f"export {GRAPH_FILES[kind]}" for kind, _, _ in graphs]
    stages += ["check graphs", "write manifest"]
    report = _stage_reporter(on_stage, len(stages))

    report(stages[0])
    checkpoint = load_checkpoint(checkpoint_path)
    if timesteps is not None:
        check_timesteps(checkpoint.schedule.num_train_timesteps, timesteps)  # before minutes of export
    model = build_model(checkpoint)

    staging = _make_staging_dir(out_dir)
    try:
        programs: dict[str, torch.export.ExportedProgram] = {}
        for kind, graph_ops, precision in graphs:
            report(f"export {GRAPH_FILES[kind]}")
            if precision not in programs:
                programs[precision] = trace_denoiser(model, precision, fixed_batch)
            lower_program(programs[precision], graph_ops, opset, staging / GRAPH_FILES[kind])

        report("check graphs")
        records = {}
        for kind, graph_ops, precision in graphs:
            path = staging / GRAPH_FILES[kind]
            check_graph(path)
            records[kind] = GraphRecord(path.name, graph_ops, IO_DTYPES[precision], **file_record(path))

        report("write manifest")
        write_manifest(_manifest(staging, out_dir, checkpoint_path, checkpoint, opset, fixed_batch, records,
                                 timesteps))
        _move_into_place(staging, out_dir)
    except OSError as exc:
        raise OutputError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(out_dir)


def check_graph(path: Path) -> None:
    """``onnx.checker`` with full (strict shape-inference) checking; ExportError on failure."""
    register_schemas()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path.name} failed onnx.checker: {_first_line(exc)}") from None


# --- arguments and target directory ----------------------------------------------------------


def _graphs_for(dtypes: Sequence[str], ops: Sequence[str]) -> list[tuple[str, str, str]]:
    unknown = [d for d in dtypes if d not in PRECISIONS] + [o for o in ops if o not in EXPORT_OPS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown dtype/ops {', '.join(map(repr, unknown))}; dtypes: {', '.join(PRECISIONS)}; ops: {', '.join(EXPORT_OPS)}"
        )
    graphs = [(kind, graph_ops, precision) for kind, graph_ops, precision in GRAPHS if graph_ops in ops and precision in dtypes]
    if not graphs:
        raise InvalidArgumentError("nothing to export: the portable graph is fp32 only; add --dtype fp32 or --ops plugin")
    return graphs


def _parse_batch_dim(batch_dim: str | int) -> int | None:
    if batch_dim == "dynamic":
        return None
    text = str(batch_dim)
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgumentError(f"--batch-dim takes 'dynamic' or a positive integer, got {batch_dim!r}")
    return int(text)


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InvalidArgumentError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a directory; choose another output with -o")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputError(f"{out_dir} already exists; pass --force to replace it")


def _make_staging_dir(out_dir: Path) -> Path:
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    return staging


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``; an existing ``out_dir`` is swapped out, then removed."""
    previous = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, previous)
    try:
        os.replace(staging, out_dir)
    except OSError:
        if previous.exists():
            os.replace(previous, out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _stage_reporter(on_stage: OnStage | None, total: int) -> Callable[[str], None]:
    index = 0

    def report(description: str) -> None:
        nonlocal index
        if on_stage is not None:
            on_stage(description, index, total)
        index += 1

    return report


# --- tracing and lowering --------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's chatter (torchvision not installed, axis renames) from the CLI."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def trace_denoiser(model: VMDDPM, precision: str, fixed_batch: int | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` of ``eps(x, t)`` in ``precision`` (fp32, or the fp16 policy of :mod:`.fp16`)."""
    config = model.config
    module = half_precision(model) if precision == "fp16" else model
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # Trace with batch 2 when the batch is dynamic: torch.export specialises sizes 0 and 1.
    batch = fixed_batch or 2
    x = torch.zeros(batch, config.in_channels, config.image_size, config.image_size, dtype=dtype)
    t = torch.zeros(batch, dtype=torch.int64)
    dynamic_shapes = None
    if fixed_batch is None:
        axis = torch.export.Dim(BATCH_AXIS, min=1)
        dynamic_shapes = {"x": {0: axis}, "t": {0: axis}}
    try:
        with _quiet_exporter():
            return torch.export.export(module, (x, t), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:  # noqa: BLE001  torch.export raises many types; all mean "cannot trace"
        raise ExportError(f"torch.export could not trace the {precision} denoiser: {_first_line(exc)}") from None


def lower_program(program: torch.export.ExportedProgram, ops: str, opset: int, path: Path) -> None:
    """Lower a traced denoiser to ONNX at ``path`` with the ``ops`` (plugin | portable) translations."""
    try:
        with _quiet_exporter():
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                custom_translation_table=translation_table(ops),
                opset_version=opset,
                input_names=["x", "t"],
                output_names=["eps"],
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001  torch.onnx wraps every failure in its own error types
        raise ExportError(f"torch.onnx.export failed for {path.name}: {_first_line(exc)}") from None
    model = onnx_program.model_proto
    _strip_node_metadata(model.graph)
    for function in model.functions:
        _strip_node_metadata(function)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if batch_dim.dim_param:  # torch.export names it s0, s13, ...: give it the contract's name
        _rename_dim(model.graph, batch_dim.dim_param, BATCH_AXIS)
    model.producer_name, model.producer_version = "vmddpm-deploy", __version__
    onnx.save_model(model, str(path))


def _strip_node_metadata(graph: onnx.GraphProto | onnx.FunctionProto) -> None:
    # The exporter annotates every node with Python stack traces and the exporting machine's
    # file paths: megabytes of noise that would also make two identical exports differ.
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _strip_node_metadata(attribute.g)
    if isinstance(graph, onnx.GraphProto):
        for values in (graph.input, graph.output, graph.value_info, graph.initializer):
            for value in values:
                del value.metadata_props[:]


def _rename_dim(graph: onnx.GraphProto, old: str, new: str) -> None:
    for values in (graph.input, graph.output, graph.value_info):
        for value in values:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param == old:
                    dim.dim_param = new
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_dim(attribute.g, old, new)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# --- manifest --------------------------------------------------------------------------------


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _manifest(staging: Path, out_dir: Path, checkpoint_path: Path, checkpoint, opset: int,
              fixed_batch: int | None, graphs: dict[str, GraphRecord], timesteps: Sequence[int] | None) -> Manifest:
    return new_manifest(
        staging,
        source=SourceRecord(
            checkpoint=os.path.relpath(checkpoint_path.resolve(), out_dir.resolve()),
            checkpoint_absolute=str(checkpoint_path.resolve()),
            sha256=checkpoint_sha256(checkpoint_path),
            weights="ema" if checkpoint.ema is not None else "model",
        ),
        config=checkpoint.config,
        schedule=checkpoint.schedule,
        opset=opset,
        graphs=graphs,
        created_by={
            "vmddpm_deploy": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": _package_version("onnxscript"),
            "onnxruntime": _package_version("onnxruntime"),
            "exporter": EXPORTER,
        },
        fixed_batch=fixed_batch,
        timesteps=timesteps,
    )
