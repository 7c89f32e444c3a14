"""A stand-in for the worker running ``fsdiffreg track`` in Testing/test_slicer_cine.py: the real worker
loop (FSDiffRegLib.commands.worker) with the same arguments, log lines and output folder as ``track``'s, with
known contents.

Frame k's field is a uniform shift of (k - reference) mm along LPS x (zero at the reference frame);
its labels are the given labels rolled by (k - reference) voxels along i, written as ``track`` writes
them (labels_NN.nii.gz per frame and labels.nii.gz, 4D; the fields with intent 1006); volumes.csv and
function.json hold the values ``expected_volumes`` and ``expected_function`` give. What the child
was given is recorded as JSON where ``FAKE_TRACK_RECORD`` says. ``FAKE_TRACK`` picks a behaviour:
``ok`` (default), ``error`` (the CLI's error line), ``crash`` (an exception that ends the worker),
``hang`` (says one line, then waits), ``missing-field`` and ``wrong-grid`` (broken outputs, exit 0).
``--frame-times-ms``, as the CLI takes it, adds a time_ms column.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from FSDiffRegLib.commands import worker  # noqa: E402
from FSDiffRegLib.events import error, progress, stage, to_stderr  # noqa: E402
from FSDiffRegLib.imaging.field import write_field  # noqa: E402
from FSDiffRegLib.labels import structure_name  # noqa: E402


def expected_volumes(frame: int, values: list[int]) -> dict[str, float]:
    """Volume (ml) of each label value at ``frame`` (1-based), as the stand-in writes them."""
    return {f"{structure_name(v)}_ml": round(10.0 * v + 1.5 * frame - 0.125 * frame * frame, 3)
            for v in values}


def expected_strain(frame: int, reference: int) -> tuple[float, float]:
    """(radial, circumferential) strain in % at ``frame``: zero at the reference frame."""
    return 2.0 * abs(frame - reference), -1.0 * abs(frame - reference)


def expected_function(frames: int, reference: int, values: list[int]) -> dict:
    """function.json as the stand-in writes it."""
    function: dict = {"frames": frames, "ED_frame": reference, "ES_frame": frames - 1}
    for name, value in (("LV", 3), ("RV", 1)):
        if value in values:
            function[name] = {"EDV_ml": 100.0 + value, "ESV_ml": 40.0 + value, "SV_ml": 60.0, "EF_percent": 58.5}
    if 2 in values:
        function["Myo"] = {"ED_volume_ml": 90.0, "mass_g": 94.5}
    if {2, 3} <= set(values):
        strain = [expected_strain(k, reference) for k in range(1, frames + 1)]
        function["strain"] = {"radial_percent": [s[0] for s in strain],
                              "circumferential_percent": [s[1] for s in strain],
                              "peak_radial_percent": max(s[0] for s in strain), "peak_radial_frame": 1,
                              "peak_circumferential_percent": min(s[1] for s in strain),
                              "peak_circumferential_frame": 1,
                              "segments": [expected_segment(k) for k in range(1, 17)]}
    function["quality"] = []
    return function


def expected_segment(segment: int) -> dict:
    """The peak strain of an AHA segment as the stand-in writes it: segment 16 has no myocardium."""
    empty = segment == 16
    return {"segment": segment, "name": f"segment {segment}",
            "peak_circumferential_percent": None if empty else -float(segment),
            "peak_radial_percent": None if empty else 2.0 * segment}


def shift_field(frame: sitk.Image, shift_mm: float) -> sitk.Image:
    displacement = np.zeros((*sitk.GetArrayViewFromImage(frame).shape, 3))
    displacement[..., 0] = shift_mm
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(frame)
    return field


def rolled(labels: sitk.Image, voxels: int) -> sitk.Image:
    image = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(labels), voxels, axis=2))
    image.CopyInformation(labels)
    return image


def record(argv: list[str], args: argparse.Namespace, paths: list[Path], frames: list[sitk.Image],
           labels: sitk.Image) -> None:
    """What the child was given, for the test to check."""
    where = os.environ.get("FAKE_TRACK_RECORD")
    if not where:
        return
    geometry = [(f.GetSize(), f.GetOrigin(), f.GetSpacing(), f.GetDirection()) for f in frames]
    Path(where).write_text(json.dumps({
        "arguments": argv, "frames": [p.name for p in paths], "reference": args.reference_frame,
        "labels_counts": {str(int(v)): int(n) for v, n in zip(*np.unique(sitk.GetArrayViewFromImage(labels),
                                                                             return_counts=True)) if v > 0},
        "labels_geometry": [labels.GetSize(), labels.GetOrigin(), labels.GetSpacing(), labels.GetDirection()],
        "geometry": geometry, "means": [float(sitk.GetArrayViewFromImage(f).mean()) for f in frames]}))


def write_outputs(out: Path, frames: list[sitk.Image], labels: sitk.Image, reference: int, mode: str,
                  times: list[float] | None) -> None:
    n = len(frames)
    width = max(2, len(str(n)))
    out.mkdir(parents=True)
    tracked = [rolled(labels, k - reference) for k in range(1, n + 1)]
    if mode == "wrong-grid":
        for image in tracked:
            image.SetOrigin([o + 7.0 for o in image.GetOrigin()])
    for k, frame in enumerate(frames, 1):
        if mode != "missing-field" or k != n:
            write_field(shift_field(frame, float(k - reference)), out / f"field_{k:0{width}d}.nii.gz")
        sitk.WriteImage(tracked[k - 1], str(out / f"labels_{k:0{width}d}.nii.gz"))
        to_stderr(progress("writing", k, n, f"writing: {k} of {n} frames written"))
    sitk.WriteImage(sitk.JoinSeries(tracked), str(out / "labels.nii.gz"))
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels)) if v > 0]
    rows = []
    for k in range(1, n + 1):
        volumes = expected_volumes(k, values)
        time_ms = [f"{times[k - 1]:.3f}"] if times else []
        rows.append(",".join([str(k), *time_ms, *(f"{v:.3f}" for v in volumes.values())]))
    header = ["frame", *(["time_ms"] if times else []), *expected_volumes(1, values)]
    (out / "volumes.csv").write_text("\n".join([",".join(header), *rows]) + "\n")
    (out / "function.json").write_text(json.dumps(expected_function(n, reference, values)))
    (out / "metrics.json").write_text(json.dumps({"version": "stand-in", "device": "cpu", "seconds": 1.25,
                                                  "frames": [{"folding_percent": 0.0}] * n}))


def track(argv: list[str]) -> int:
    """``fsdiffreg track``'s stand-in: its exit status."""
    parser = argparse.ArgumentParser(prog="fsdiffreg")
    parser.add_argument("command", choices=["track"])
    parser.add_argument("cine")
    parser.add_argument("--labels", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--reference-frame", type=int, default=1)
    parser.add_argument("--weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--refine", type=int, default=20)
    parser.add_argument("--smoothness", type=float)
    parser.add_argument("--frame-times-ms", type=lambda text: [float(t) for t in text.split(",")])
    args = parser.parse_args(argv)
    mode = os.environ.get("FAKE_TRACK", "ok")
    to_stderr(stage("reading", "reading cine"))
    if mode == "hang":
        time.sleep(300)
    if mode == "error":
        to_stderr(error("labels must be integer-valued, got float"))
        return 2
    if mode == "crash":
        raise MemoryError
    paths = sorted(Path(args.cine).iterdir())
    frames = [sitk.ReadImage(str(p)) for p in paths]
    labels = sitk.ReadImage(args.labels)
    record(argv, args, paths, frames, labels)
    to_stderr(stage("loading", f"loading weights on {args.device}"))
    for k in range(2, len(frames) + 2, 2):
        done = min(k, len(frames))
        to_stderr(progress("network", done, len(frames), f"network: {done} of {len(frames)} frames registered"))
    for step in range(1, args.refine + 1):
        to_stderr(progress("refining", step, args.refine, f"refining: {step} of {args.refine} steps done"))
    write_outputs(Path(args.out_dir), frames, labels, args.reference_frame, mode, args.frame_times_ms)
    return 0


if __name__ == "__main__":
    worker.run = track
    worker.CommandServer().serve()
