"""``manifest.json``: what an export directory holds, and everything a host needs without Python.

Format ``vmddpm-deploy-export/1`` (docs/design.md section 3): the model config, the noise schedule with its
``alphas_cumprod`` table, graph I/O names / dtypes / symbolic axes, the opset, the custom-op
domain and attribute names the TensorRT plugins read, and for every file (graphs, engines) its
sha256 and size. A reader trusts a file only after its checksum matches (``read_manifest``).

The file is read into :class:`Manifest` (typed records, validated on read; reading never
writes) and written by :func:`write_manifest` alone: the exporter builds its manifest with
:func:`new_manifest`, ``build-engine`` adds an engine with :meth:`Manifest.with_engine`.

Example::

    manifest = read_manifest("exports/tiny")        # ArtifactError on any mismatch
    onnx_path = manifest.graph_path("portable")
    config, schedule = manifest.config, manifest.schedule
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.diffusion.schedule import NoiseSchedule, check_timesteps
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import ArtifactError, ConfigError, InvalidArgumentError
from vmddpm_deploy.model.config import ModelConfig

FORMAT = "vmddpm-deploy-export/1"
MANIFEST_NAME = "manifest.json"

#: Graph kinds and the file each is written to.
GRAPH_FILES: dict[str, str] = {
    "fp32": "denoiser.onnx",
    "fp16": "denoiser.fp16.onnx",
    "portable": "denoiser.portable.onnx",
}
GRAPH_KINDS: tuple[str, ...] = tuple(GRAPH_FILES)

#: The custom-op domain and, per op type, the attributes its node carries besides
#: ``plugin_version`` / ``plugin_namespace`` (what a TensorRT IPluginCreatorV3One reads).
CUSTOM_DOMAIN = "vmddpm"
PLUGIN_NAMESPACE = "vmddpm"
PLUGIN_VERSION = "1"
CUSTOM_OP_ATTRIBUTES: dict[str, list[str]] = {
    "VmddpmSelectiveScan": ["delta_softplus"],
    "VmddpmCrossScan": ["scan_order"],
    "VmddpmCrossMerge": ["scan_order", "height", "width"],
}

#: Every manifest says how its noise was drawn, so a host without Python can reproduce it.
SEEDING = "per-sample counter RNG, see vmddpm_deploy/diffusion/noise.py"
#: The symbolic batch axis of the graphs' I/O (a graph exported with ``--batch-dim K`` has K).
BATCH_AXIS = "batch"

_REQUIRED = ("source", "model", "schedule", "opset", "custom_ops", "inputs", "outputs", "graphs")
_REEXPORT = "re-export with `vmddpm-deploy export CHECKPOINT -o DIR --force`"
#: JSON types of the record fields (annotations are strings under ``from __future__ import annotations``).
_JSON_TYPES = {"str": str, "int": int}


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` of a file, the identity every manifest entry carries."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _record(cls, value: Any, where: str, path: Path):
    """``cls`` (a dataclass of str / int fields) from the JSON object ``value``; ArtifactError
    naming ``where`` and the field on a missing or mistyped one."""
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: {where} is not an object; {_REEXPORT}")
    values = {}
    for item in dataclasses.fields(cls):
        wanted = _JSON_TYPES[item.type]
        if item.name not in value:
            if item.default is not dataclasses.MISSING:
                continue  # a field added later; older files keep the default
            raise ArtifactError(f"{path}: {where} has no {item.name!r}; {_REEXPORT}")
        got = value[item.name]
        if not isinstance(got, wanted) or isinstance(got, bool):
            raise ArtifactError(f"{path}: {where}.{item.name} is not a {wanted.__name__} ({got!r}); {_REEXPORT}")
        values[item.name] = got
    return cls(**values)


@dataclass(frozen=True)
class SourceRecord:
    """The checkpoint an export was made from."""

    # Relative to the export directory, so that export and run can move together and any working
    # directory finds it; ``checkpoint_absolute`` finds it after the export directory alone moved.
    # Exports from before ``checkpoint_absolute`` wrote the path as given on the command line.
    checkpoint: str
    sha256: str
    weights: str  # "ema" or "model"
    checkpoint_absolute: str = ""


@dataclass(frozen=True)
class GraphRecord:
    """One exported graph: its file, how it runs the vmddpm ops, its I/O dtype and identity."""

    file: str
    ops: str  # "plugin" or "portable"
    io_dtype: str  # "float32" or "float16"
    sha256: str
    bytes: int


@dataclass(frozen=True)
class EngineRecord:
    """One TensorRT plan beside the graphs: what it was built from, for which TensorRT and GPU,
    and the identities of the plan and of the plugin library it loads."""

    graph: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    tensorrt: str
    gpu: str
    compute_capability: str
    sha256: str
    bytes: int
    plugin_library: str
    plugin_library_sha256: str


@dataclass(frozen=True)
class CustomOps:
    """The custom-op domain, plugin namespace and version, and each op's attribute names."""

    domain: str = CUSTOM_DOMAIN
    plugin_namespace: str = PLUGIN_NAMESPACE
    plugin_version: str = PLUGIN_VERSION
    ops: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {op: tuple(names) for op, names in CUSTOM_OP_ATTRIBUTES.items()}
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain, "plugin_namespace": self.plugin_namespace,
            "plugin_version": self.plugin_version, "ops": {op: list(names) for op, names in self.ops.items()},
        }


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype and shape (the batch axis is ``"batch"`` or an int)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Manifest:
    """An export directory's ``manifest.json``, read and validated (and, unless ``verify=False``,
    every listed file checked against its sha256)."""

    export_dir: Path
    created_by: Mapping[str, str | None]
    source: SourceRecord
    config: ModelConfig
    schedule: NoiseSchedule
    opset: int
    custom_ops: CustomOps
    inputs: tuple[TensorSpec, TensorSpec]  # x (batch, C, H, W), t (batch,)
    outputs: tuple[TensorSpec]  # eps (batch, C, H, W)
    graphs: Mapping[str, GraphRecord]
    engines: Mapping[str, EngineRecord] = field(default_factory=dict)
    seeding: str = SEEDING
    #: Explicit sampling timesteps (``export --timesteps``, a ``tune-schedule`` file's), descending;
    #: the C++ host samples at them instead of a spacing. None: none recorded.
    timesteps: tuple[int, ...] | None = None

    @property
    def path(self) -> Path:
        return self.export_dir / MANIFEST_NAME

    @property
    def batch_axis(self) -> int | str:
        """``"batch"``, or the fixed batch size of a ``--batch-dim K`` export."""
        return self.inputs[0].shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.inputs[0].shape[1:])

    def graph_path(self, kind: str) -> Path:
        """The file of graph ``kind`` (fp32 | fp16 | portable); ArtifactError if it was not exported."""
        if kind not in GRAPH_KINDS:
            raise ArtifactError(f"unknown graph kind {kind!r}; choose one of {', '.join(GRAPH_KINDS)}")
        entry = self.graphs.get(kind)
        if entry is None:
            exported = ", ".join(self.graphs) or "none"
            raise ArtifactError(
                f"{self.export_dir} has no {kind} graph (exported: {exported}); "
                f"re-export with `vmddpm-deploy export CHECKPOINT -o {self.export_dir} --dtype both --ops all --force`"
            )
        return self.export_dir / entry.file

    def with_engine(self, name: str, engine: EngineRecord) -> Manifest:
        """This manifest with plan ``name`` added (or replaced); nothing is written."""
        return dataclasses.replace(self, engines={**self.engines, name: engine})

    def verify(self) -> None:
        """Check that every graph and engine listed exists and matches its sha256 and size."""
        entries = [(entry.file, entry) for entry in self.graphs.values()] + list(self.engines.items())
        for name, entry in entries:
            path = self.export_dir / name
            if not path.is_file():
                raise ArtifactError(f"{path} is listed in {self.path} but missing; {_REEXPORT}")
            if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
                raise ArtifactError(
                    f"{path} does not match its sha256 in {self.path} (modified or truncated); {_REEXPORT}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (docs/design.md section 3)."""
        schedule = self.schedule
        return {
            "format": FORMAT,
            "created_by": dict(self.created_by),
            "source": dataclasses.asdict(self.source),
            "model": self.config.to_dict(),
            # The table is for hosts without Python; the schedule's fields define it.
            "schedule": {**schedule.to_dict(), "alphas_cumprod": schedule.alphas_cumprod.tolist()},
            "opset": self.opset,
            "custom_ops": self.custom_ops.to_dict(),
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "graphs": {kind: dataclasses.asdict(entry) for kind, entry in self.graphs.items()},
            "engines": {name: dataclasses.asdict(entry) for name, entry in self.engines.items()},
            "seeding": self.seeding,
            **({} if self.timesteps is None else {"timesteps": list(self.timesteps)}),
        }

    @classmethod
    def from_dict(cls, export_dir: Path, data: Any) -> Manifest:
        """Validate ``data`` (the parsed ``manifest.json``); one ArtifactError per problem."""
        path = Path(export_dir) / MANIFEST_NAME
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is not a manifest (top level is not an object); {_REEXPORT}")
        if data.get("format") != FORMAT:
            raise ArtifactError(
                f"{path} has format {data.get('format')!r}; this version reads {FORMAT!r}; {_REEXPORT}"
            )
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ArtifactError(f"{path} is missing {', '.join(missing)}; {_REEXPORT}")
        if not isinstance(data["graphs"], dict) or not isinstance(data.get("engines", {}), dict):
            raise ArtifactError(f"{path}: 'graphs' and 'engines' must be objects; {_REEXPORT}")
        graphs = {}
        for kind, entry in data["graphs"].items():
            if kind not in GRAPH_KINDS or not isinstance(entry, dict) or "file" not in entry:
                raise ArtifactError(f"{path}: malformed graph entry {kind!r}; {_REEXPORT}")
            graphs[kind] = _record(GraphRecord, entry, f"graphs.{kind}", path)
        engines = {
            name: _record(EngineRecord, entry, f"engines.{name}", path) for name, entry in data.get("engines", {}).items()
        }
        try:
            config = ModelConfig.from_dict(data["model"])
            schedule = NoiseSchedule.from_dict(
                {k: v for k, v in data["schedule"].items() if k != "alphas_cumprod"}
                if isinstance(data["schedule"], dict) else data["schedule"]
            )
        except ConfigError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        opset = data["opset"]
        if not isinstance(opset, int) or isinstance(opset, bool):
            raise ArtifactError(f"{path}: opset is not an integer ({opset!r}); {_REEXPORT}")
        created_by = data.get("created_by", {})
        seeding = data.get("seeding", SEEDING)
        if not isinstance(created_by, dict) or not isinstance(seeding, str):
            raise ArtifactError(f"{path}: malformed created_by or seeding; {_REEXPORT}")
        timesteps = data.get("timesteps")
        if timesteps is not None:
            if not isinstance(timesteps, list):
                raise ArtifactError(f"{path}: timesteps must be a list, got {type(timesteps).__name__}; {_REEXPORT}")
            try:
                timesteps = check_timesteps(schedule.num_train_timesteps, timesteps)
            except InvalidArgumentError as exc:
                raise ArtifactError(f"{path}: {exc}; {_REEXPORT}") from None
        return cls(
            export_dir=Path(export_dir),
            created_by=created_by,
            source=_record(SourceRecord, data["source"], "source", path),
            config=config,
            schedule=schedule,
            opset=opset,
            custom_ops=_custom_ops(data["custom_ops"], path),
            inputs=_io(data["inputs"], ("x", "t"), config, path, "inputs"),
            outputs=_io(data["outputs"], ("eps",), config, path, "outputs"),
            graphs=graphs,
            engines=engines,
            seeding=seeding,
            timesteps=timesteps,
        )


def _custom_ops(value: Any, path: Path) -> CustomOps:
    if not isinstance(value, dict) or not isinstance(value.get("ops"), dict):
        raise ArtifactError(f"{path}: custom_ops is not an object with 'ops'; {_REEXPORT}")
    texts = {key: value.get(key) for key in ("domain", "plugin_namespace", "plugin_version")}
    if not all(isinstance(text, str) for text in texts.values()):
        raise ArtifactError(f"{path}: custom_ops needs domain, plugin_namespace and plugin_version; {_REEXPORT}")
    ops = {}
    for op, names in value["ops"].items():
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ArtifactError(f"{path}: custom_ops.ops.{op} is not a list of attribute names; {_REEXPORT}")
        ops[op] = tuple(names)
    return CustomOps(**texts, ops=ops)


def _io(value: Any, roles: tuple[str, ...], config: ModelConfig, path: Path, where: str) -> tuple[TensorSpec, ...]:
    """The graph inputs (x, t) or outputs (eps): one TensorSpec per role, shaped as the model's."""
    if not isinstance(value, list) or len(value) != len(roles):
        raise ArtifactError(f"{path}: {where} must list {', '.join(roles)}; {_REEXPORT}")
    image = [config.in_channels, config.image_size, config.image_size]
    specs = []
    for role, entry in zip(roles, value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("dtype"), str):
            raise ArtifactError(f"{path}: {where} entry for {role} needs a name and a dtype; {_REEXPORT}")
        shape = entry.get("shape")
        batch_ok = isinstance(shape, list) and shape and (
            shape[0] == BATCH_AXIS or (isinstance(shape[0], int) and not isinstance(shape[0], bool) and shape[0] > 0)
        )
        if not batch_ok or list(shape[1:]) != (image if role != "t" else []):
            raise ArtifactError(
                f"{path}: {where} {entry['name']} has shape {shape!r}, the model's is "
                f"[{BATCH_AXIS!r}{''.join(f', {d}' for d in image) if role != 't' else ''}]; {_REEXPORT}"
            )
        specs.append(TensorSpec(entry["name"], entry["dtype"], tuple(shape)))
    return tuple(specs)


def new_manifest(
    export_dir: str | os.PathLike,
    *,
    source: SourceRecord,
    config: ModelConfig,
    schedule: NoiseSchedule,
    opset: int,
    graphs: Mapping[str, GraphRecord],
    created_by: Mapping[str, str | None],
    fixed_batch: int | None = None,
    timesteps: Sequence[int] | None = None,
) -> Manifest:
    """The manifest of a fresh export: graph I/O ``x (batch, C, H, W), t (batch,) -> eps`` (batch
    symbolic unless ``fixed_batch``), this version's custom ops, no engines yet."""
    batch = fixed_batch if fixed_batch is not None else BATCH_AXIS
    image = (config.in_channels, config.image_size, config.image_size)
    return Manifest(
        export_dir=Path(export_dir),
        created_by=dict(created_by),
        source=source,
        config=config,
        schedule=schedule,
        opset=opset,
        custom_ops=CustomOps(),
        inputs=(TensorSpec("x", "float32", (batch, *image)), TensorSpec("t", "int64", (batch,))),
        outputs=(TensorSpec("eps", "float32", (batch, *image)),),
        graphs=dict(graphs),
        timesteps=None if timesteps is None else check_timesteps(schedule.num_train_timesteps, timesteps),
    )


def read_manifest(export_dir: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read ``export_dir/manifest.json``; with ``verify`` also check every file's sha256. Never writes."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_NAME
    if not export_dir.is_dir():
        raise ArtifactError(f"export directory not found: {export_dir}; create it with `vmddpm-deploy export`")
    if not path.is_file():
        raise ArtifactError(f"{export_dir} has no {MANIFEST_NAME}; it is not an export directory ({_REEXPORT})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON ({exc}); {_REEXPORT}") from None
    manifest = Manifest.from_dict(export_dir, data)
    if verify:
        manifest.verify()
    return manifest


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` to its ``export_dir/manifest.json`` atomically (temp file + rename): the
    one writer of the file. What it writes reads back as the same manifest."""
    if not isinstance(manifest, Manifest):
        raise ArtifactError(f"refusing to write {type(manifest).__name__} as a manifest; build a Manifest")
    data = manifest.to_dict()
    Manifest.from_dict(manifest.export_dir, data)  # an invalid field fails here, not in the next reader
    text = json.dumps(data, indent=2) + "\n"
    return write_atomic(manifest.path, lambda handle: handle.write(text.encode("utf-8")))
