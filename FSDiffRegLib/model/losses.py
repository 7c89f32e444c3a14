"""Training losses: SDG-weighted local NCC (Eq. 4), smoothness, diffusion loss (Eq. 6), inverse consistency."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inverse import inverse_residual


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a window^3 box around each voxel (zero padding), as three 1D poolings."""
    for kernel in ((window, 1, 1), (1, window, 1), (1, 1, window)):
        padding = tuple(k // 2 for k in kernel)
        x = F.avg_pool3d(x, kernel, stride=1, padding=padding, count_include_pad=True)
    return x * float(window**3)


def local_ncc_map(a: torch.Tensor, b: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Voxel-wise squared local correlation cross^2 / (var_a var_b + 1e-5) in a box window."""
    n = float(window**3)
    sums = box_sum(torch.cat([a, b, a * b, a * a, b * b], dim=1).flatten(0, 1)[:, None], window)
    sa, sb, sab, saa, sbb = sums.view(a.shape[0], 5, *a.shape[2:]).unbind(1)
    cross = sab - sa * sb / n
    var_a = saa - sa * sa / n
    var_b = sbb - sb * sb / n
    return (cross * cross / (var_a * var_b + 1e-5))[:, None]


def score_weights(score: torch.Tensor, gamma: float) -> torch.Tensor:
    """SDG weights sigmoid(S)^gamma: large where the diffusion score marks hard voxels."""
    return torch.sigmoid(score) ** gamma


def sdg_ncc_loss(
    warped: torch.Tensor, fixed: torch.Tensor, weights: torch.Tensor | None, window: int = 9
) -> torch.Tensor:
    """-mean(w * NCC) with images in [-1, 1] rescaled to [0, 1]; w = 1 gives plain NCC."""
    cc = local_ncc_map((warped + 1) / 2, (fixed + 1) / 2, window)
    if weights is not None:
        cc = weights * cc
    return -cc.mean()


def smoothness_loss(flow: torch.Tensor) -> torch.Tensor:
    """Mean squared forward differences of the flow, averaged over the three axes."""
    dz = flow[:, :, 1:] - flow[:, :, :-1]
    dy = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dx = flow[:, :, :, :, 1:] - flow[:, :, :, :, :-1]
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean()) / 3.0


def inverse_consistency_loss(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Mean squared distance (voxels^2) of the two flows of one pair, composed both ways, from the identity.

    ``forward`` registers A (moving) to B (fixed), ``backward`` B to A; their maps compose to
    phi_AB(phi_BA(p)) - p = u_BA(p) + u_AB(p + u_BA(p)) (``inverse_residual``, the spatial transformer with
    border padding), and the same with the flows swapped: 0 for exact inverses.
    """
    there, back = inverse_residual(forward, backward), inverse_residual(backward, forward)
    return (there.pow(2).mean() + back.pow(2).mean()) / 2


def soft_dice_loss(warped: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over channels (structures) of one-hot maps (N, C, D, H, W).

    A structure absent from both maps counts as matched (Dice 1), so crops without it add nothing.
    """
    dims = (0, 2, 3, 4)
    overlap = (warped * target).sum(dims)
    total = warped.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * overlap + 1e-6) / (total + 1e-6)).mean()


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Integer labels (N, 1, D, H, W) as float one-hot maps of labels 1..classes (N, classes, D, H, W)."""
    return torch.cat([(labels == k).float() for k in range(1, classes + 1)], dim=1)


def diffusion_loss(predicted_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """L1 distance to the true noise, as the official implementation."""
    return (predicted_noise - noise).abs().mean()
