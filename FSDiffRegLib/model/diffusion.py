"""The DDPM forward process used to perturb the fixed image (paper Eq. 1)."""

from __future__ import annotations

import torch

from .config import Config


class NoiseSchedule:
    """Linear betas over ``timesteps`` steps; alpha_bar is the cumulative product of 1 - beta."""

    def __init__(self, cfg: Config):
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.timesteps, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1.0 - betas, dim=0).float()
        self.timesteps = cfg.timesteps

    def sample_t(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.timesteps, (batch,), generator=generator)

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        a = self.alpha_bar.to(x0.device)[t].view(-1, 1, 1, 1, 1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise
