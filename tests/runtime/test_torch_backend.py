"""The torch backend in fp32, under the fp16 policy of the fp16 graph, and in bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import InvalidArgumentError
from vmddpm_deploy.runtime.torch_backend import TorchDenoiser
from tests.runtime.conftest import MICRO


def checkpoint_inputs_and_fp32_eps():
    checkpoint = init_checkpoint(MICRO, NoiseSchedule(), seed=1)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 400, 999])
    return checkpoint, x, t, TorchDenoiser(checkpoint)(x, t)


def test_fp16_policy_tracks_fp32_within_the_fp16_tolerance():
    checkpoint, x, t, fp32 = checkpoint_inputs_and_fp32_eps()
    half = TorchDenoiser(checkpoint, precision="fp16")
    eps = half(x, t)
    assert eps.dtype == torch.float32 and eps.shape == x.shape  # eps in x's dtype
    assert half.model.time_embed.module[0].weight.dtype == torch.float32  # an fp32 island of the policy
    assert half.model.stem.weight.dtype == torch.float16
    torch.testing.assert_close(eps, fp32, rtol=3e-3, atol=5e-3)
    assert not torch.equal(eps, fp32)  # it really ran in fp16
    with pytest.raises(InvalidArgumentError, match="torch precision must be one of auto, fp32, fp16, bf16"):
        TorchDenoiser(checkpoint, precision="fp8")


def test_bf16_autocast_tracks_fp32_within_the_bf16_tolerance():
    checkpoint, x, t, fp32 = checkpoint_inputs_and_fp32_eps()
    bf16 = TorchDenoiser(checkpoint, precision="bf16")
    eps = bf16(x, t)
    assert eps.dtype == torch.float32 and eps.is_contiguous() and eps.shape == x.shape
    assert bf16.model.stem.weight.dtype == torch.float32  # autocast: weights stay fp32
    assert bf16.model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(eps, fp32, rtol=3e-2, atol=5e-2)
    assert not torch.equal(eps, fp32)  # it really ran in bf16


def test_bf16_runs_convolutions_in_bf16_and_norms_accumulate_in_fp32():
    """What the bf16 path promises, checked on the modules it runs: convolutions and linear layers
    see bf16, and LayerNorm / GroupNorm on bf16 input equal the fp32 computation rounded once to
    bf16 (a norm accumulating its 4096-element statistics in bf16 would be far off)."""
    checkpoint = init_checkpoint(MICRO, NoiseSchedule(), seed=1)
    denoiser = TorchDenoiser(checkpoint, precision="bf16")
    seen: dict[str, set] = {"conv": set(), "norm": set()}
    hooks = []
    for module in denoiser.model.modules():
        kind = "conv" if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) else None
        kind = "norm" if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) else kind
        if kind:
            hooks.append(module.register_forward_hook(lambda m, a, out, kind=kind: seen[kind].add(out.dtype)))
    denoiser(torch.randn(2, 1, 8, 8), torch.tensor([10, 500]))
    for hook in hooks:
        hook.remove()
    assert seen["conv"] == {torch.bfloat16} and seen["norm"] == {torch.bfloat16}
    x = (torch.randn(2, 64, 64, 64) * 3 + 5).to(torch.bfloat16)
    for norm in (torch.nn.GroupNorm(4, 64), torch.nn.LayerNorm(64)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = norm(x if isinstance(norm, torch.nn.GroupNorm) else x.permute(0, 2, 3, 1))
        with torch.no_grad():
            exact = norm(x.float() if isinstance(norm, torch.nn.GroupNorm) else x.float().permute(0, 2, 3, 1))
        torch.testing.assert_close(low.float(), exact.to(torch.bfloat16).float(), rtol=8e-3, atol=8e-3)


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(tmp_path, monkeypatch):
    from vmddpm_deploy.runtime import torch_backend

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor : 0\nflags : fpu sse avx2 avx512f\n")
    assert torch_backend.cpu_has_native_bf16(with_bf16) and not torch_backend.cpu_has_native_bf16(without)
    assert not torch_backend.cpu_has_native_bf16(tmp_path / "missing")
    for native in (True, False):
        monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda native=native: native)
        assert torch_backend.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        assert torch_backend.resolve_precision("auto", "cuda") == "fp32"
    assert torch_backend.resolve_precision("bf16", "cpu") == "bf16"
