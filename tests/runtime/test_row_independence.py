"""The property batch padding rests on (vmddpm_deploy/generation.py): at one batch shape, a row's eps
does not depend on its position in the batch or on the other rows, bit for bit, on every CPU
backend. Only another batch size may round differently."""

from __future__ import annotations

import pytest
import torch

from vmddpm_deploy.ops import dispatch, native_library
from vmddpm_deploy.runtime.source import load_denoiser, open_source

BATCH = 4


def backends(exported):
    ckpt, export_dir = exported
    yield "torch, reference ops", load_denoiser(open_source(ckpt), "torch"), dispatch.REFERENCE
    if native_library.available():
        yield "torch, native ops", load_denoiser(open_source(ckpt), "torch"), dispatch.NATIVE
    yield "onnxruntime", load_denoiser(open_source(export_dir), "onnxruntime"), None


def run(denoiser, kernels, x, t):
    if kernels is None:
        return denoiser(x, t)
    with dispatch.using(kernels):
        return denoiser(x, t)


def test_a_rows_eps_depends_on_neither_its_position_nor_its_company(exported):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * BATCH, 1, 8, 8, generator=generator)
    t = torch.randint(0, 1000, (2 * BATCH,), generator=generator)
    checked = []
    for name, denoiser, kernels in backends(exported):
        first = run(denoiser, kernels, x[:BATCH], t[:BATCH])
        # Row 0 again, now last, beside three other samples.
        rows = torch.tensor([BATCH + 1, BATCH + 2, BATCH + 3, 0])
        moved = run(denoiser, kernels, x[rows], t[rows])
        assert torch.equal(moved[-1], first[0]), name
        # The same rows in reverse order.
        reversed_rows = run(denoiser, kernels, x[:BATCH].flip(0), t[:BATCH].flip(0))
        assert torch.equal(reversed_rows.flip(0), first), name
        checked.append(name)
    assert "onnxruntime" in checked and "torch, reference ops" in checked


@pytest.mark.parametrize("other_batch", [1, 2])
def test_another_batch_size_stays_within_float_rounding(exported, other_batch):
    """What padding avoids: another shape may round differently, but only at float32 precision."""
    ckpt, _ = exported
    denoiser = load_denoiser(open_source(ckpt), "torch")
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(BATCH, 1, 8, 8, generator=generator), torch.full((BATCH,), 500)
    full = denoiser(x, t)
    part = denoiser(x[:other_batch], t[:other_batch])
    torch.testing.assert_close(part, full[:other_batch], rtol=1e-5, atol=1e-5)


def test_every_cpu_backend_writes_the_same_files_for_any_split(exported, tmp_path):
    """The end-to-end consequence, per backend: a full run and a 3-way split at one batch size."""
    from vmddpm_deploy.diffusion import make_sampler
    from vmddpm_deploy.jobs.output_dir import OutputDir
    from vmddpm_deploy.jobs.sampling import sample_shard
    from vmddpm_deploy.jobs.spec import JobSettings, Shard
    from vmddpm_deploy.runtime.arithmetic import Arithmetic

    n, batch_size = 5, 2
    arithmetic = Arithmetic("torch", "test", "cpu", "fp32", micro_batch=batch_size)
    for name, denoiser, kernels in backends(exported):
        sampler = make_sampler("ddim", open_source(exported[0]).schedule, 3, eta=0.5)

        def run(out, shard):
            settings = JobSettings("f" * 64, n, "ddim", 3, 0.5, 4, "png", shard, batch_size, arithmetic=arithmetic)
            if kernels is None:
                return sample_shard(OutputDir(out, settings, resume=False), denoiser, sampler, (1, 8, 8))
            with dispatch.using(kernels):
                return sample_shard(OutputDir(out, settings, resume=False), denoiser, sampler, (1, 8, 8))

        full, split = tmp_path / name / "full", tmp_path / name / "split"
        run(full, Shard())
        for index in range(3):
            run(split, Shard(index, 3))
        for i in range(n):
            assert (split / f"{i:05d}.png").read_bytes() == (full / f"{i:05d}.png").read_bytes(), (name, i)
