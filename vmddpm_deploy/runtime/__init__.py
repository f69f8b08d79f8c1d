"""Runtimes: every backend that answers ``Denoiser(x, t) -> eps`` (docs/design.md section 4).

The protocol itself lives with its users, :mod:`vmddpm_deploy.diffusion.denoiser`;
:mod:`.source` opens a SRC and loads the backend that runs it.
"""
