"""``manifest.json``: what an export directory holds, and everything a host needs without Python.

Format ``vmddpm-deploy-export/1`` (docs/design.md section 3): the model config, the noise schedule with its
``alphas_cumprod`` table, graph I/O names / dtypes / symbolic axes, the opset, the custom-op
domain and attribute names the TensorRT plugins read, and for every file (graphs, engines) its
sha256 and size. A reader trusts a file only after its checksum matches (``read_manifest``).

Example::

    manifest = read_manifest("exports/tiny")        # ArtifactError on any mismatch
    onnx_path = manifest.graph_path("portable")
    config, schedule = manifest.config, manifest.schedule
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.diffusion.schedule import NoiseSchedule
from vmddpm_deploy.digests import sha256_file
from vmddpm_deploy.errors import ArtifactError, ConfigError
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

_REQUIRED = ("format", "source", "model", "schedule", "opset", "inputs", "outputs", "graphs")
_REEXPORT = "re-export with `vmddpm-deploy export CHECKPOINT -o DIR --force`"


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` of a file, the identity every manifest entry carries."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


@dataclass(frozen=True)
class Manifest:
    """A read (and, unless ``verify=False``, checksum-verified) export directory."""

    export_dir: Path
    data: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.export_dir / MANIFEST_NAME

    @property
    def config(self) -> ModelConfig:
        try:
            return ModelConfig.from_dict(self.data["model"])
        except ConfigError as exc:
            raise ArtifactError(f"{self.path}: {exc}") from None

    @property
    def schedule(self) -> NoiseSchedule:
        # The alphas_cumprod table is for hosts without Python; the schedule's fields define it.
        fields = {k: v for k, v in self.data["schedule"].items() if k != "alphas_cumprod"}
        try:
            return NoiseSchedule.from_dict(fields)
        except ConfigError as exc:
            raise ArtifactError(f"{self.path}: {exc}") from None

    @property
    def graphs(self) -> dict[str, dict[str, Any]]:
        return self.data["graphs"]

    @property
    def engines(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("engines", {})

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
        return self.export_dir / entry["file"]

    def verify(self) -> None:
        """Check that every graph and engine listed exists and matches its sha256 and size."""
        entries = [(entry["file"], entry) for entry in self.graphs.values()]
        entries += list(self.engines.items())
        for name, entry in entries:
            path = self.export_dir / name
            if not path.is_file():
                raise ArtifactError(f"{path} is listed in {self.path} but missing; {_REEXPORT}")
            if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
                raise ArtifactError(
                    f"{path} does not match its sha256 in {self.path} (modified or truncated); {_REEXPORT}"
                )


def read_manifest(export_dir: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read ``export_dir/manifest.json``; with ``verify`` also check every file's sha256."""
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
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a manifest (top level is not an object); {_REEXPORT}")
    if data.get("format") != FORMAT:
        raise ArtifactError(f"{path} has format {data.get('format')!r}; this version reads {FORMAT!r}; {_REEXPORT}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ArtifactError(f"{path} is missing {', '.join(missing)}; {_REEXPORT}")
    if not isinstance(data["graphs"], dict) or not isinstance(data.get("engines", {}), dict):
        raise ArtifactError(f"{path}: 'graphs' and 'engines' must be objects; {_REEXPORT}")
    for kind, entry in data["graphs"].items():
        if kind not in GRAPH_KINDS or not isinstance(entry, dict) or "file" not in entry:
            raise ArtifactError(f"{path}: malformed graph entry {kind!r}; {_REEXPORT}")
    manifest = Manifest(export_dir, data)
    manifest.config, manifest.schedule  # noqa: B018  (fail now, not deep inside a runtime)
    if verify:
        manifest.verify()
    return manifest


def write_manifest(export_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``export_dir/manifest.json`` atomically (temp file + rename)."""
    if data.get("format") != FORMAT:
        raise ArtifactError(f"refusing to write a manifest whose format is not {FORMAT!r}")
    text = json.dumps(data, indent=2) + "\n"
    return write_atomic(Path(export_dir) / MANIFEST_NAME, lambda handle: handle.write(text.encode("utf-8")))
