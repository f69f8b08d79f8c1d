"""Every denoiser call of a sampling run, recorded for the C++ host's ``--replay``
(``vmddpm-deploy sample SRC --record-eps FILE``): the host then runs its own DDIM loop and random
numbers on the recorded eps, which checks it against Python without a GPU or TensorRT.

Format (little-endian; read by ``plugins/host/src/replay_denoiser.h``)::

    8 bytes    magic "VMDEPS01"
    4 x u32    channels, height, width, number of calls
    per call:  u32 batch; batch x i64 t; batch*C*H*W x f32 x (the sampler's input);
               batch*C*H*W x f32 eps (what the denoiser returned)
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from vmddpm_deploy.atomic_write import write_atomic
from vmddpm_deploy.diffusion import Denoiser

REPLAY_MAGIC = b"VMDEPS01"


class EpsRecorder:
    """A Denoiser that runs ``denoiser`` and records each call; :meth:`close` writes ``path``
    atomically. Calls stream to an unnamed temporary file beside ``path``, so memory stays flat."""

    #: The host replays the calls in its loop's order, so they must not run side by side
    #: (:func:`vmddpm_deploy.jobs.sampling.sample_shard`).
    needs_calls_in_order = True

    def __init__(self, denoiser: Denoiser, path: str | os.PathLike, image_shape: tuple[int, int, int]):
        self.denoiser, self.path, self.image_shape = denoiser, Path(path), tuple(image_shape)
        self.calls = 0
        self._stream = tempfile.TemporaryFile(dir=self.path.parent)

    @property
    def batch_range(self) -> tuple[int, int] | None:
        """The wrapped backend's batch limits (:mod:`vmddpm_deploy.runtime.batching`)."""
        return getattr(self.denoiser, "batch_range", None)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.denoiser(x, t)
        self._stream.write(struct.pack("<I", t.shape[0]))
        self._stream.write(t.detach().cpu().numpy().astype("<i8").tobytes())
        self._stream.write(x.detach().float().cpu().numpy().astype("<f4").tobytes())
        self._stream.write(eps.detach().float().cpu().numpy().astype("<f4").tobytes())
        self.calls += 1
        return eps

    def close(self) -> Path:
        """Write the recording to ``path`` (header with the call count, then the calls)."""
        header = REPLAY_MAGIC + struct.pack("<4I", *self.image_shape, self.calls)

        def write(handle) -> None:
            handle.write(header)
            self._stream.seek(0)
            shutil.copyfileobj(self._stream, handle)

        try:
            return write_atomic(self.path, write)
        finally:
            self._stream.close()

    def discard(self) -> None:
        """Drop what was recorded (a run that failed or was interrupted leaves no file)."""
        self._stream.close()
