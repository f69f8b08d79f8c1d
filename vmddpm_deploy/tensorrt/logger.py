"""One TensorRT logger per process: warnings and errors go to stderr, and the last error is kept
so a failure can be reported in one line ("... (TensorRT: <what it said>)")."""

from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any


@functools.lru_cache(maxsize=1)
def tensorrt_logger(trt: ModuleType) -> Any:
    """The process's logger (TensorRT uses the first logger it is given for process-wide state)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.last_error = ""

        def log(self, severity, msg) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.last_error = msg
            if severity <= trt.ILogger.Severity.WARNING:
                print(f"tensorrt: {msg}", file=sys.stderr)

        def take_error(self) -> str:
            """The last error since the previous call, as a suffix for a message ("" if none)."""
            error, self.last_error = self.last_error, ""
            return f" (TensorRT: {error})" if error else ""

    return Logger()
