"""Training FSDiffReg on ACDC: resumable, logged, validated by Dice on the network grid.

Under torchrun each process (rank) trains its share of every global batch of
``batch_size`` x world size samples in DistributedDataParallel; rank 0 alone logs,
validates and writes checkpoints.

The run folder is new, empty, or a run of ours (it holds ``RUN_MARK``, written first), checked
with the data, the checkpoint to resume and the initial weights before anything is written: a
refused run writes nothing, and a run that fails before its first checkpoint removes the folder
it made. One run at a time trains in a folder (``RUN_LOCK``). Checkpoints hold only tensors,
numbers, strings, lists and dicts, and are read with ``weights_only=True``: a checkpoint can never
run code.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, TypeVar, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import __version__
from ..errors import InputError, OutputError, WeightsError
from ..files import replaced_whole
from ..imaging import acdc
from ..imaging.metrics import heart_labels_dice
from ..labels import STRUCTURES
from ..model.config import Config
from ..model.diffusion import NoiseSchedule
from ..model.losses import (
    diffusion_loss,
    inverse_consistency_loss,
    one_hot,
    score_weights,
    sdg_ncc_loss,
    smoothness_loss,
    soft_dice_loss,
)
from ..model.network import FSDiffRegNet, parameter_count
from ..model.predict import predict
from ..model.spatial import warp
from ..model.weights import checked_payload, first_line, load_safely, load_state, save_weights
from ..outputs.folder import locked
from . import distributed
from .dataset import GridPair, load_grid_pairs, swapped, training_sample

LOG_FIELDS = ["epoch", "step", "loss", "diffusion", "ncc", "smooth", "dice", "seconds", "inverse"]
RUN_MARK = "fsdiffreg-run.json"  # the first file of a run folder: {"fsdiffreg": version, "run": "train"}
RUN_LOCK = ".fsdiffreg-train-lock"  # held by rank 0 while a run trains: a second run in the folder is refused
CHECKPOINT_KEYS = {"model", "optimizer", "state", "config", "rng"}
T = TypeVar("T")


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0
    best_dice: float = -1.0


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (N, C, D, H, W) tensor to ``device`` in channels-last layout (faster 3D convs)."""
    return x.to(device, memory_format=torch.channels_last_3d)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_loss(
    model: FSDiffRegNet | DistributedDataParallel, schedule: NoiseSchedule, moving: torch.Tensor,
    fixed: torch.Tensor, labels: tuple[torch.Tensor, torch.Tensor] | None = None, rank: int = 0, ranks: int = 1,
) -> dict[str, torch.Tensor]:
    """Eq. 5: diffusion loss + lam * SDG-weighted NCC + lam_phi * smoothness (+ lam_dice * Dice loss)
    (+ inverse_consistency * the inverse-consistency term).

    The score only weights the similarity (it is detached there), so the NCC term cannot
    lower itself by inflating the score. With ``lam_dice`` > 0 and ``labels`` (moving, fixed),
    the soft Dice of the moving labels warped by the flow is added: weak supervision at
    training time only; registering never needs labels. With ``inverse_consistency`` > 0 the
    batch is trained in both orders (the pairs swapped appended to it) and the flows of each
    pair's two orders are pushed to be inverses (``inverse_consistency_loss``).

    The batch is share ``rank`` of a global batch of ``ranks`` equal shares: times and noise
    are drawn for the whole global batch and this share kept, so a sample's noise is the same
    whichever rank trains it.
    """
    cfg = cast(Config, getattr(model, "module", model).cfg)  # the model's, or DistributedDataParallel's model's
    if cfg.inverse_consistency > 0:  # both orders of every pair in one batch: pairs, then the pairs swapped
        moving, fixed = torch.cat((moving, fixed)), torch.cat((fixed, moving))
        labels = (torch.cat(labels), torch.cat(labels[::-1])) if labels is not None else None
    n = moving.shape[0]
    share = slice(rank * n, (rank + 1) * n)
    t = schedule.sample_t(n * ranks)[share].to(moving.device)
    noise = torch.randn((n * ranks, *fixed.shape[1:]), dtype=fixed.dtype, device=fixed.device)[share]
    score, flow = model(moving, fixed, schedule.perturb(fixed, t, noise), t)
    weights = score_weights(score.detach(), cfg.gamma) if cfg.sdg else None
    parts = {
        "diffusion": diffusion_loss(score, noise),
        "ncc": sdg_ncc_loss(warp(moving, flow), fixed, weights, cfg.ncc_window),
        "smooth": smoothness_loss(flow),
    }
    parts["loss"] = parts["diffusion"] + cfg.lam * parts["ncc"] + cfg.lam_phi * parts["smooth"]
    if cfg.inverse_consistency > 0:
        parts["inverse"] = inverse_consistency_loss(*flow.chunk(2))
        parts["loss"] = parts["loss"] + cfg.inverse_consistency * parts["inverse"]
    if cfg.lam_dice > 0 and labels is not None:
        warped = warp(one_hot(labels[0], len(STRUCTURES)), flow)
        parts["dice"] = soft_dice_loss(warped, one_hot(labels[1], len(STRUCTURES)))
        parts["loss"] = parts["loss"] + cfg.lam_dice * parts["dice"]
    return parts


@torch.no_grad()
def validate(model: FSDiffRegNet, items: list[GridPair], device: torch.device) -> dict[str, float]:
    """Mean Dice (LV, Myo, RV, mean, heart) of labels warped by the network on its grid."""
    model.eval()
    rows = []
    for item in items:
        moving = to_device(torch.from_numpy(item.moving)[None, None], device)
        fixed = to_device(torch.from_numpy(item.fixed)[None, None], device)
        _, flow = predict(model, moving, fixed)
        labels = torch.from_numpy(item.moving_labels.astype(np.float32))[None, None].to(device)
        warped = warp(labels, flow, mode="nearest")[0, 0].cpu().numpy().astype(np.uint8)
        rows.append(heart_labels_dice(warped, item.fixed_labels))
    model.train()
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def learning_rate(cfg: Config, epoch: int) -> float:
    """The learning rate of a 0-based epoch: constant, or cosine-annealed from cfg.lr to 0."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs)) / 2
    return cfg.lr


def is_run_folder(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds the mark of a run of ``fsdiffreg train``."""
    try:
        mark = json.loads((run_dir / RUN_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and "fsdiffreg" in mark and mark.get("run") == "train"


def check_run_folder(run_dir: Path) -> None:
    """Refuse a run folder that is neither new, nor empty, nor a run of ours (InputError, one line)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"the run folder {run_dir} is a file: name a folder")
    if not run_dir.is_dir() or is_run_folder(run_dir):
        return
    entries = sorted(entry.name for entry in os.scandir(run_dir))
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise InputError(f"the run folder {run_dir} holds {shown} but no {RUN_MARK}: it is not a run of fsdiffreg "
                         "train to resume; name a new or empty folder")


def check_data(data_dir: Path) -> None:
    """Refuse a data folder without ACDC training and validation patients."""
    for which in ("train", "validation"):
        try:
            acdc.split(data_dir, which)
        except FileNotFoundError as err:  # no patients there
            raise InputError(str(err)) from None
        except (OSError, KeyError, ValueError) as err:  # an unreadable Info.cfg
            raise InputError(f"cannot read the ACDC data in {data_dir}: {first_line(err)}") from None


def start_run(run_dir: Path, held: ExitStack) -> tuple[bool, Path | None]:
    """``start_run_folder``, then its lock, held until ``held`` closes; refused while another run holds it."""
    new, made = start_run_folder(run_dir)
    try:
        held.enter_context(locked(run_dir / RUN_LOCK, run_dir))
    except OutputError as err:
        raise InputError(str(err).replace("the output folder", "the run folder")) from None
    return new, made


def start_run_folder(run_dir: Path) -> tuple[bool, Path | None]:
    """Make ``run_dir`` a run folder (its mark first) unless it is one: whether it was not (a new run), and the
    topmost folder made (None when the run folder existed)."""
    if is_run_folder(run_dir):
        return False, None
    made = next((folder for folder in reversed((run_dir, *run_dir.parents)) if not folder.exists()), None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / RUN_MARK, "x", encoding="utf-8") as handle:
            json.dump({"fsdiffreg": __version__, "run": "train"}, handle)
    except OSError as err:
        raise InputError(f"cannot make the run folder {run_dir}: {err.strerror or first_line(err)}") from None
    return True, made


def remove_new_run(run_dir: Path, made: Path | None) -> None:
    """Undo ``start_run_folder``: remove the folders it made, or empty the folder it was given empty."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for entry in os.scandir(run_dir):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.remove(entry.path)


def on_main(check: Callable[[], T]) -> T:
    """``check()`` run by rank 0 alone; its value, or its one-line refusal, on every rank."""
    value: T | None = None
    error: Exception | None = None
    if distributed.is_main():
        try:
            value = check()
        except (InputError, WeightsError) as err:
            error = err
    value, error = distributed.from_main((value, error))
    if error is not None:
        raise error
    return cast(T, value)  # rank 0's value, which check() gave


def random_state() -> dict:
    """The random generators' states as tensors and numbers (a checkpoint loads them with weights_only)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,  # this rank's device
            "numpy": {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}}


def set_random_state(state: dict) -> None:
    """Set the generators to ``random_state()``'s; every rank takes rank 0's (they draw alike: ``training_loss``)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), int(numpy["pos"]),
                         int(numpy["has_gauss"]), float(numpy["cached_gaussian"])))


def _save_checkpoint(path: Path, model, optimizer, state: TrainState) -> None:
    with replaced_whole(path) as handle:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": asdict(state),
                    "config": json.loads(model.cfg.to_json()), "rng": random_state()}, handle)


def read_checkpoint(path: Path) -> tuple[dict, Config]:
    """A run's last checkpoint and its configuration, read safely; WeightsError in one line otherwise."""
    checkpoint = load_safely(path, "the checkpoint")
    if not (isinstance(checkpoint, dict) and CHECKPOINT_KEYS <= checkpoint.keys()):
        raise WeightsError(f"cannot resume from {path}: not a checkpoint of fsdiffreg train (a dict with "
                           f"{', '.join(sorted(CHECKPOINT_KEYS))})")
    try:
        return checkpoint, Config.from_dict(checkpoint["config"])
    except (TypeError, ValueError) as err:
        raise WeightsError(f"cannot resume from {path}: invalid configuration: {first_line(err)}") from None


def _resume(path: Path, checkpoint: dict, model, optimizer) -> TrainState:
    """Put the checkpoint's weights, optimiser and random state in place; its training state."""
    load_state(model, checkpoint["model"], f"the checkpoint {path}")
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_random_state(checkpoint["rng"])
        return TrainState(**checkpoint["state"])
    except Exception as err:  # a damaged or foreign checkpoint: many types
        raise WeightsError(f"cannot resume from {path}: a damaged checkpoint ({first_line(err)})") from None


def _drop_steps_after(log_csv: Path, step: int) -> None:
    """Forget the logged steps of an epoch that was interrupted before its checkpoint."""
    if log_csv.is_file():
        with open(log_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        with open(log_csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(row for row in rows if int(row["step"]) <= step)


def _log(run_dir: Path, message: str) -> None:
    with open(run_dir / "train.log", "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def global_batches(order: np.ndarray, per_rank: int, ranks: int) -> list[np.ndarray]:
    """An epoch's global batches of ``per_rank`` x ``ranks`` samples, each rank taking an equal share.

    With several ranks the order wraps around to a multiple of ``ranks``, so that the last
    batch too gives every rank a share (of fewer samples).
    """
    order = np.resize(order, len(order) + -len(order) % ranks)
    size = per_rank * ranks
    return [order[i:i + size] for i in range(0, len(order), size)]


def _load_items(
    data_dir: Path, run_dir: Path, cfg: Config, train_limit: int | None, val_limit: int | None,
) -> tuple[list[GridPair], list[GridPair]]:
    """Training and validation pairs on the grid. Rank 0 fills the cache first; the other ranks
    then read it (or preprocess in memory where they do not see it) and need no validation pairs."""
    train_pairs = acdc.split(data_dir, "train")[:train_limit]
    cache = run_dir / "cache"
    if distributed.is_main():
        val_pairs = acdc.split(data_dir, "validation")[:val_limit]
        items = (load_grid_pairs(train_pairs, cfg, cache / "train.npz"),
                 load_grid_pairs(val_pairs, cfg, cache / "validation.npz"))
    distributed.barrier()
    if not distributed.is_main():
        seen = cache / "train.npz"
        items = (load_grid_pairs(train_pairs, cfg, seen if seen.is_file() else None), [])
    return items


def train(
    data_dir: Path,
    run_dir: Path,
    cfg: Config,
    device: torch.device,
    max_minutes: float | None = None,
    train_limit: int | None = None,
    val_limit: int | None = None,
    init_weights: Path | None = None,
) -> TrainState:
    """Train (or resume) in ``run_dir``: last.pt each epoch, best weights by validation Dice.

    A new run starts from ``init_weights`` when given (fine-tuning: the network must match ``cfg``).
    Under torchrun the processes train together (module docstring); each returns rank 0's state.
    """
    device = distributed.init(device)
    try:
        return _train(data_dir, run_dir, cfg, device, max_minutes, train_limit, val_limit, init_weights)
    finally:
        distributed.cleanup()


def _train(
    data_dir: Path, run_dir: Path, cfg: Config, device: torch.device, max_minutes: float | None,
    train_limit: int | None, val_limit: int | None, init_weights: Path | None,
) -> TrainState:
    main, rank = distributed.is_main(), distributed.rank()
    last = run_dir / "last.pt"
    on_main(lambda: check_run_folder(run_dir))
    resuming = last.is_file()
    if distributed.from_main(resuming) != resuming:
        raise InputError(f"rank {rank} does not see the run folder {run_dir} as rank 0 does: "
                         "every node needs it on a shared filesystem")
    checkpoint = None
    if resuming:  # a resumed run keeps its configuration but for the epoch budget and lr schedule
        checkpoint, stored = read_checkpoint(last)
        cfg = replace(stored, epochs=cfg.epochs, lr_schedule=cfg.lr_schedule)
    on_main(lambda: check_data(data_dir))
    seed_everything(cfg.seed)
    model = FSDiffRegNet(cfg).to(device, memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # as above
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = _resume(last, checkpoint, model, optimizer) if checkpoint is not None else TrainState()
    if init_weights is not None and not resuming:
        load_state(model, checked_payload(init_weights)[0]["state_dict"], f"the initial weights {init_weights}")
    with ExitStack() as held:
        new, made = on_main(lambda: start_run(run_dir, held))
        try:
            if main:
                (run_dir / "config.json").write_text(cfg.to_json())
                if init_weights is not None and not resuming:
                    _log(run_dir, f"initialised from {init_weights}")
            return _run(data_dir, run_dir, cfg, device, max_minutes, train_limit, val_limit, model, optimizer, state)
        except BaseException:
            if main and new and not last.is_file():  # a new run that failed before its first checkpoint
                remove_new_run(run_dir, made)
            raise


def _run(
    data_dir: Path, run_dir: Path, cfg: Config, device: torch.device, max_minutes: float | None,
    train_limit: int | None, val_limit: int | None, model: FSDiffRegNet, optimizer: torch.optim.Optimizer,
    state: TrainState,
) -> TrainState:
    """Train in the run folder, from ``state``: the checks passed, the folder is a run of ours."""
    main, rank, ranks = distributed.is_main(), distributed.rank(), distributed.world_size()
    train_items, val_items = _load_items(data_dir, run_dir, cfg, train_limit, val_limit)
    if main:
        _drop_steps_after(run_dir / "log.csv", state.step)
        _log(run_dir, f"start epoch {state.epoch} step {state.step}; {parameter_count(model)} parameters; "
             f"{len(train_items)} train / {len(val_items)} validation pairs; device {device}"
             + (f"; {ranks} processes (DDP)" if ranks > 1 else ""))
    # DDP averages the gradients over the ranks; checkpoints hold the plain model's weights
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if ranks > 1 else model
    # 1x1x1 kernels: channels-last weights, gradients of another (equivalent) stride; a copy, not an error
    warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
    schedule = NoiseSchedule(cfg)
    deadline = time.time() + 60 * max_minutes if max_minutes else None
    log_csv = run_dir / "log.csv" if main else Path(os.devnull)  # the other ranks log nowhere
    new_log = main and not log_csv.is_file()
    with open(log_csv, "a", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        if new_log:
            writer.writeheader()
        model.train()
        while distributed.from_main(state.epoch < cfg.epochs and (deadline is None or time.time() < deadline)):
            rng = np.random.default_rng(cfg.seed + state.epoch)
            batches = global_batches(rng.permutation(len(train_items)), cfg.batch_size, ranks)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, state.epoch)
            for batch in tqdm(batches, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=not main):
                start = time.time()
                # every rank draws every sample of the batch: a sample's crop does not depend on its rank
                samples = [training_sample(train_items[i], cfg, rng) for i in batch]
                share = len(batch) // ranks
                mine = samples[rank * share:(rank + 1) * share]
                moving, fixed, moving_labels, fixed_labels = (to_device(torch.cat(x), device) for x in zip(*mine))
                parts = training_loss(net, schedule, moving, fixed, (moving_labels, fixed_labels), rank, ranks)
                optimizer.zero_grad(set_to_none=True)
                parts["loss"].backward()
                optimizer.step()
                state.step += 1
                means = distributed.average(torch.stack([v.detach() for v in parts.values()])).tolist()
                writer.writerow({"epoch": state.epoch + 1, "step": state.step, "seconds": round(time.time() - start, 3),
                                 **{k: round(v, 5) for k, v in zip(parts, means)}})
                handle.flush()
            state.epoch += 1
            if main:
                _end_epoch(run_dir, model, optimizer, state, val_items, device)
    return distributed.from_main(state)


def _end_epoch(
    run_dir: Path, model: FSDiffRegNet, optimizer: torch.optim.Optimizer, state: TrainState,
    val_items: list[GridPair], device: torch.device,
) -> None:
    """Rank 0 after each epoch: validate when due (best weights), write last.pt, log.

    A run trained in both directions is validated in both (ES onto ED, the pairs as given, then ED onto ES) and
    its best weights are those of the best mean of the two directions' mean Dice."""
    cfg = model.cfg
    if state.epoch % cfg.val_every == 0 or state.epoch == cfg.epochs:
        scores = validate(model, val_items, device)
        _log(run_dir, f"epoch {state.epoch} validation " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        score = scores["mean"]
        if cfg.directions == "both":
            back = validate(model, [swapped(item) for item in val_items], device)
            _log(run_dir, f"epoch {state.epoch} validation ED->ES " + " ".join(f"{k} {v:.4f}" for k, v in back.items()))
            score = (score + back["mean"]) / 2
            scores = {**scores, **{f"{k} ED->ES": v for k, v in back.items()}, "both directions": score}
        if score > state.best_dice:
            state.best_dice = score
            save_weights(model, run_dir / "best.pt", {"epoch": state.epoch, "validation_dice": scores})
    _save_checkpoint(run_dir / "last.pt", model, optimizer, state)
    _log(run_dir, f"epoch {state.epoch} done, step {state.step}, lr {optimizer.param_groups[0]['lr']:.2e}")
