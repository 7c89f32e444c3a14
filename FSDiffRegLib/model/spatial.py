"""The spatial transformer and flow resizing, in voxel units of the network grid.

A flow ``u`` has channels (u_D, u_H, u_W): the warped image at voxel p samples the
moving image at p + u(p) (a backward, resampling map, like ITK's displacement fields).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _identity_grid(size: tuple[int, ...], device: torch.device) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Sample ``image`` (N, C, D, H, W) at p + flow(p); trilinear or nearest; zero (or border) outside."""
    size = flow.shape[2:]
    loc = _identity_grid(tuple(size), flow.device)[None] + flow
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in size], device=flow.device)
    loc = loc * scale[None, :, None, None, None] - 1.0
    grid = loc.permute(0, 2, 3, 4, 1).flip(-1)  # grid_sample wants (x, y, z) = (W, H, D)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=True)


def upsample_flow(flow: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a flow to ``size``, rescaling each displacement component with its axis."""
    if tuple(flow.shape[2:]) == tuple(size):
        return flow
    scale = torch.tensor(
        [(n - 1) / max(m - 1, 1) for n, m in zip(size, flow.shape[2:])], device=flow.device
    )
    resized = F.interpolate(flow, size=size, mode="trilinear", align_corners=True)
    return resized * scale[None, :, None, None, None].to(flow.dtype)


def integrate_velocity(velocity: torch.Tensor, squarings: int = 7) -> torch.Tensor:
    """exp(v) by scaling and squaring: a stationary velocity field -> a diffeomorphic flow."""
    flow = velocity / (2**squarings)
    for _ in range(squarings):
        flow = flow + warp(flow, flow, padding="border")
    return flow


def gaussian_blur(x: torch.Tensor, sigmas: tuple[float, float, float]) -> torch.Tensor:
    """``x`` (N, C, D, H, W) smoothed channel by channel with a Gaussian of ``sigmas`` voxels along (D, H, W)
    (0: that axis untouched), cut at 3 sigma, edges replicated."""
    channels = x.shape[1]
    for axis, sigma in enumerate(sigmas):
        if sigma == 0:
            continue
        radius = math.ceil(3 * sigma)
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-offsets**2 / (2 * sigma**2))
        shape = [1, 1, 1]
        shape[axis] = kernel.numel()
        padding = [0] * 6
        padding[4 - 2 * axis] = padding[5 - 2 * axis] = radius  # F.pad lists the last axis first
        weight = (kernel / kernel.sum()).view(1, 1, *shape).repeat(channels, 1, 1, 1, 1)
        x = F.conv3d(F.pad(x, padding, mode="replicate"), weight, groups=channels)
    return x
