"""Failure families of vmddpm-deploy.

Every error a user can cause or meet raises one of these. The CLI prints ``str(error)`` as one
line (``error: ...``) and exits with the family's ``exit_code``; no traceback reaches the user.
Messages say what is wrong and what to do about it.
"""

from __future__ import annotations


class VmddpmError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class InvalidArgumentError(VmddpmError):
    """A command-line or API argument is out of range or inconsistent (e.g. ``--n 0``)."""

    exit_code = 2


class ConfigError(VmddpmError):
    """A model or schedule configuration is invalid (unknown preset, scan order, field)."""

    exit_code = 3


class CheckpointError(VmddpmError):
    """A checkpoint is missing, not a checkpoint, of an unknown format, or mismatched."""

    exit_code = 4


class OutputError(VmddpmError):
    """An output location cannot be written (exists as a file, not writable, disk full)."""

    exit_code = 5


class NativeOpsError(VmddpmError):
    """The native kernel library is missing, failed to load, or rejected a call."""

    exit_code = 6


class ExportError(VmddpmError):
    """A model could not be exported to ONNX, or an exported graph failed validation."""

    exit_code = 7


class ArtifactError(VmddpmError):
    """An export directory, manifest, graph or engine is missing, corrupt (checksum mismatch) or
    was made for something else (another GPU, TensorRT version or batch range)."""

    exit_code = 8


class BackendUnavailableError(VmddpmError):
    """A runtime is not installed or cannot run here (no tensorrt module, no GPU, no plugin
    library)."""

    exit_code = 9


class ParityError(VmddpmError):
    """Backends disagree beyond their dtype's tolerance (``check``)."""

    exit_code = 10


class DataError(VmddpmError):
    """A dataset path is missing, empty, or holds files that cannot be read as images."""

    exit_code = 11
