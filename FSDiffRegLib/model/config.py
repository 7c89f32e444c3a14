"""Model and training configuration: one dataclass, stored as JSON beside weights."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..resources import CONFIGS as CONFIG_DIR

GRID_SPACING_MM = (0.1, 20.0)  # sane bounds of the network grid's spacing
GRID_MAX_SIDE = 512
GRID_MAX_VOXELS = 256 * 256 * 64  # 8 times the paper's grid


@dataclass
class Config:
    """Everything that defines a model and how it is trained.

    Paper values: base_width 8, channel_mults (1, 2, 4, 4), gamma 1, lam 20,
    lam_phi 20, lr 2e-4, 2000 diffusion steps with betas 1e-6..1e-2.
    """

    base_width: int = 8
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    res_blocks: int = 1
    attn_heads: int = 4
    norm_groups: int = 4
    fdg: bool = True
    sdg: bool = True
    gamma: float = 1.0
    lam: float = 20.0
    lam_phi: float = 20.0
    lam_dice: float = 0.0  # weak supervision: Dice of warped training labels (0: the paper, unsupervised)
    ncc_window: int = 9
    timesteps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    grid_size: tuple[int, int, int] = (128, 128, 32)
    grid_spacing: tuple[float, float, float] = (1.5, 1.5, 3.15)
    train_crop: tuple[int, int, int] = (128, 128, 32)
    lr: float = 2e-4
    lr_schedule: str = "constant"  # or "cosine": annealed to 0 at the last epoch
    batch_size: int = 1
    epochs: int = 700
    val_every: int = 5
    seed: int = 0
    augment: bool = True  # in-plane flips of the training crops
    directions: str = "both"  # "both": each sample's fixed/moving order drawn at random; "one": ES onto ED only
    inverse_consistency: float = 0.0  # weight of the inverse-consistency term (0: off; > 0: both orders each step)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.directions not in ("both", "one"):
            raise ValueError(f"directions must be 'both' or 'one', got {self.directions!r}")
        if not (isinstance(self.inverse_consistency, (int, float)) and 0 <= self.inverse_consistency < math.inf):
            raise ValueError(f"inverse_consistency must be a number >= 0, got {self.inverse_consistency!r}")
        self.check_grid()

    @property
    def grid_multiple(self) -> int:
        """The UNet's downsampling: every side of a grid the network sees is a multiple of it."""
        return 2 ** (len(self.channel_mults) - 1)

    def check_grid(self) -> None:
        """Grid and crop sizes: multiples of the UNet's downsampling within bounds; spacings within bounds."""
        step = self.grid_multiple
        for name in ("grid_size", "train_crop"):
            size = getattr(self, name)
            if not (isinstance(size, tuple) and len(size) == 3
                    and all(isinstance(n, int) and 0 < n <= GRID_MAX_SIDE and n % step == 0 for n in size)):
                raise ValueError(f"{name} must be 3 whole numbers, multiples of {step} up to {GRID_MAX_SIDE}, "
                                 f"got {size!r}")
        if math.prod(self.grid_size) > GRID_MAX_VOXELS:
            raise ValueError(f"grid_size {self.grid_size} has more than {GRID_MAX_VOXELS} voxels")
        if any(c > n for c, n in zip(self.train_crop, self.grid_size)):
            raise ValueError(f"train_crop {self.train_crop} is larger than grid_size {self.grid_size}")
        lo, hi = GRID_SPACING_MM
        spacing = self.grid_spacing
        if not (isinstance(spacing, tuple) and len(spacing) == 3
                and all(isinstance(v, (int, float)) and lo <= v <= hi for v in spacing)):
            raise ValueError(f"grid_spacing must be 3 numbers from {lo} to {hi} mm, got {spacing!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        if not isinstance(data, dict):
            raise ValueError(f"a configuration is a dict of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        tuples = {"channel_mults", "grid_size", "grid_spacing", "train_crop"}
        values: dict[str, Any] = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Config:
        """Load a JSON file, or a bundled configuration by name (e.g. ``cpu``)."""
        path = Path(name_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise FileNotFoundError(f"configuration not found: {name_or_path}")
        return cls.from_dict(json.loads(path.read_text()))
