"""Model and training configuration: one dataclass, stored as JSON beside weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .resources import CONFIGS as CONFIG_DIR


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
    augment: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        tuples = {"channel_mults", "grid_size", "grid_spacing", "train_crop"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})

    @classmethod
    def load(cls, name_or_path: str | Path) -> Config:
        """Load a JSON file, or a bundled configuration by name (e.g. ``cpu``)."""
        path = Path(name_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise FileNotFoundError(f"configuration not found: {name_or_path}")
        return cls.from_dict(json.loads(path.read_text()))
