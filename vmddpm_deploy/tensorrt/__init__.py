"""TensorRT: engines built from an export directory, with our plugins (docs/design.md sections 3-5).

Importing this package does not import ``tensorrt``; every entry point does so lazily and raises
BackendUnavailableError (one line) where TensorRT, a GPU or the plugin library is missing.

* :mod:`.engine_builder`: ``EngineBuilder`` and its Polygraphy-style loaders (``build-engine``);
* :mod:`.engines`: engine file names, manifest entries, "was this plan built for this machine";
* :mod:`.plugin_library`: finding ``libvmddpm_trt_plugins.so`` and loading it into TensorRT;
* :mod:`.environment`: the ``tensorrt`` module and the GPU.

The runtime side is :mod:`vmddpm_deploy.runtime.tensorrt_backend`.
"""

from vmddpm_deploy.tensorrt.engine_builder import (
    BuiltEngine,
    EngineBuilder,
    EngineSettings,
)
from vmddpm_deploy.tensorrt.engines import BatchRange, engine_file_name, select_engine
from vmddpm_deploy.tensorrt.plugin_library import (
    PLUGIN_LIBRARY_FILENAME,
    find_plugin_library,
)

__all__ = [
    "PLUGIN_LIBRARY_FILENAME",
    "BatchRange",
    "BuiltEngine",
    "EngineBuilder",
    "EngineSettings",
    "engine_file_name",
    "find_plugin_library",
    "select_engine",
]
