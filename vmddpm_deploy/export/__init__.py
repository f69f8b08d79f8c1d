"""ONNX export of the denoiser (docs/design.md section 3): graphs with custom nodes for TensorRT, an
fp16 variant, a portable standard-ops graph for ONNX Runtime, and ``manifest.json``.

Importing this package is cheap (the manifest reader only); the exporter loads torch.onnx and
onnxscript when :func:`export_checkpoint` is first called.
"""

from __future__ import annotations

from vmddpm_deploy.export.manifest import (
    FORMAT,
    GRAPH_FILES,
    GRAPH_KINDS,
    MANIFEST_NAME,
    EngineRecord,
    GraphRecord,
    Manifest,
    SourceRecord,
    file_record,
    new_manifest,
    read_manifest,
    write_manifest,
)


def __getattr__(name: str):
    # PEP 562: ``export_checkpoint`` (torch.onnx, onnxscript) loads on first use, so readers of
    # manifests (runtimes, build-engine) do not pay for the exporter.
    if name == "export_checkpoint":
        from vmddpm_deploy.export.exporter import export_checkpoint

        return export_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMAT",
    "GRAPH_FILES",
    "GRAPH_KINDS",
    "MANIFEST_NAME",
    "EngineRecord",
    "GraphRecord",
    "Manifest",
    "SourceRecord",
    "export_checkpoint",
    "file_record",
    "new_manifest",
    "read_manifest",
    "write_manifest",
]
