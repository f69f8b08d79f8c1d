"""The TensorRT plugin library (``libvmddpm_trt_plugins``, built from plugins/tensorrt/): where it
is, and loading it into TensorRT's plugin registry.

It is looked for, in order:

1. ``--plugin-lib PATH`` (an explicit path: only that file);
2. ``VMDDPM_TRT_PLUGIN_LIB`` (likewise);
3. ``vmddpm_deploy/_native/`` in each directory of the package's ``__path__`` (wheels and
   editable installs built with the TensorRT plugins);
4. ``build/`` and ``build/tensorrt/`` at the repository root (``cmake -S plugins -B build``).

``build-engine`` copies the library beside the plan it builds; the ``tensorrt`` backend and the C++
host load that copy, checked against the sha256 the manifest recorded, so a plan always runs with
the plugins it was built with.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import vmddpm_deploy
from vmddpm_deploy.errors import BackendUnavailableError

if TYPE_CHECKING:  # the manifest module imports torch; the annotation needs only the name
    from vmddpm_deploy.export.manifest import CustomOps

ENV_VAR = "VMDDPM_TRT_PLUGIN_LIB"

if sys.platform == "win32":
    PLUGIN_LIBRARY_FILENAME = "vmddpm_trt_plugins.dll"
else:
    PLUGIN_LIBRARY_FILENAME = "libvmddpm_trt_plugins.so"

BUILD_HINT = "build it with `cmake -S plugins -B build -DVMDDPM_TENSORRT=ON && cmake --build build`"

# TensorRT's plugin registry is process-wide and refuses a second registration of the same
# creators: each library is loaded once per process (keyed by resolved path).
_loaded: dict[Path, Any] = {}
_lock = threading.Lock()


def plugin_library_candidates() -> list[Path]:
    """Where the library is looked for when no path is given (see the module docstring)."""
    explicit = os.environ.get(ENV_VAR, "").strip()
    if explicit:
        return [Path(explicit)]
    candidates = [Path(entry) / "_native" / PLUGIN_LIBRARY_FILENAME for entry in vmddpm_deploy.__path__]
    build = Path(vmddpm_deploy.__file__).resolve().parents[1] / "build"
    candidates += [build / PLUGIN_LIBRARY_FILENAME, build / "tensorrt" / PLUGIN_LIBRARY_FILENAME]
    return candidates


def find_plugin_library(explicit: str | os.PathLike | None = None) -> Path:
    """The plugin library to build with; BackendUnavailableError naming where it looked."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise BackendUnavailableError(f"plugin library {path} not found (--plugin-lib); {BUILD_HINT}")
        return path
    candidates = plugin_library_candidates()
    for path in candidates:
        if path.is_file():
            return path
    source = f"{ENV_VAR}={candidates[0]}" if os.environ.get(ENV_VAR, "").strip() else ", ".join(map(str, candidates))
    raise BackendUnavailableError(
        f"TensorRT plugin library {PLUGIN_LIBRARY_FILENAME} not found (looked in {source}); "
        f"{BUILD_HINT}, or pass --plugin-lib PATH"
    )


def load_plugin_library(trt: ModuleType, path: Path, custom_ops: CustomOps) -> None:
    """Load ``path`` into TensorRT's plugin registry and check it provides every op the graph uses.

    ``custom_ops`` is the manifest's: the plugin namespace and version and the op names. A library that loads but lacks one of them is from another vmddpm-deploy version.
    """
    resolved = path.resolve()
    registry = trt.get_plugin_registry()
    with _lock:
        if resolved not in _loaded:
            handle = registry.load_library(str(resolved))
            if handle is None:
                raise BackendUnavailableError(
                    f"TensorRT {trt.__version__} could not load plugin library {path} (built against another "
                    f"TensorRT version, or missing a dependency? see the TensorRT error above); {BUILD_HINT}"
                )
            _loaded[resolved] = handle
    version, namespace = custom_ops.plugin_version, custom_ops.plugin_namespace
    missing = [op for op in custom_ops.ops if registry.get_creator(op, version, namespace) is None]
    if missing:
        raise BackendUnavailableError(
            f"plugin library {path} does not provide {', '.join(missing)} (version {version}, namespace "
            f"{namespace}): it is from another vmddpm-deploy version; {BUILD_HINT}"
        )
