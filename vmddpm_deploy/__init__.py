"""vmddpm-deploy: export, accelerate and sample VM-DDPM (Vision Mamba DDPM) models."""

__version__ = "0.1.0"
