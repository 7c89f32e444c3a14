"""``fsdiffreg batch``: a manifest of real ACDC pairs (and a Sunnybrook cine) run as real processes:
sets written whole, the summary, failures recorded, resume, Ctrl-C, and a dask LocalCluster with a worker
killed mid-case."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from FSDiffRegLib.commands.manifest import read_manifest
from FSDiffRegLib.errors import InputError
from FSDiffRegLib.imaging import acdc
from test_dicom_cine import write_dicom

SUNNYBROOK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"
REGISTER_SET = {"displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "metrics.json"}


def batch(*args: str | Path, **popen: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "FSDiffRegLib.commands.cli", "batch", *map(str, args),
                           "--refine", "0"],
                          capture_output=True, text=True, timeout=600, **popen)


def summary(out: Path, name: str = "summary.csv") -> dict[str, dict[str, str]]:
    with open(out / name, newline="", encoding="utf-8") as file:
        return {row["id"]: row for row in csv.DictReader(file)}


@pytest.fixture()
def cohort(data_dir: Path, tmp_path: Path) -> Path:
    """Two ACDC validation pairs copied into ``cohort/`` and a manifest with paths relative to it, a third row
    whose moving image is missing."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    rows = ["id,fixed,moving,moving_labels"]
    for pair in acdc.split(data_dir, "validation")[:2]:
        for path in (pair.fixed, pair.moving, pair.moving_labels):
            shutil.copy(path, folder / path.name)
        rows.append(f"{pair.patient},{pair.fixed.name},{pair.moving.name},{pair.moving_labels.name}")
    rows.append(f"missing,{pair.fixed.name},no_such_frame.nii.gz,")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_batch_registers_records_a_failure_and_resumes(cohort: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = batch(cohort, "--out-root", out)
    assert run.returncode == 1, run.stderr
    rows = summary(out)
    assert list(rows) == ["patient091", "patient092", "missing"]
    assert rows["missing"]["status"] == "failed"
    assert rows["missing"]["error"] == f"moving image not found: {cohort.parent / 'no_such_frame.nii.gz'}"
    for case in ("patient091", "patient092"):
        assert rows[case]["status"] == "done"
        assert float(rows[case]["ncc_after"]) > float(rows[case]["ncc_before"])
        assert {p.name for p in (out / case).iterdir()} == REGISTER_SET | {"warped_labels.nii.gz"}
        metrics = json.loads((out / case / "metrics.json").read_text())
        assert metrics["options"]["refine"]["steps"] == 0
        assert len(metrics["inputs"]["moving"]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["patient091", "patient092", "summary.csv"]
    assert run.stderr.count("loading weights") == 1 and "reading images" not in run.stderr  # read ahead

    written = {case: (out / case / "metrics.json").stat().st_mtime_ns for case in ("patient091", "patient092")}
    run = batch(cohort, "--out-root", out)
    assert run.returncode == 1, run.stderr
    assert [row["status"] for row in summary(out).values()] == ["skipped", "skipped", "failed"]
    assert {case: (out / case / "metrics.json").stat().st_mtime_ns for case in written} == written

    moving = cohort.parent / acdc.split(data_dir, "validation")[1].moving.name
    image = sitk.ReadImage(str(moving))
    sitk.WriteImage(image * 2, str(moving))  # a changed input reruns its case alone
    (cohort.parent / "no_such_frame.nii.gz").symlink_to(moving)  # the failed case runs now
    run = batch(cohort, "--out-root", out)
    assert run.returncode == 0, run.stderr
    assert [row["status"] for row in summary(out).values()] == ["skipped", "done", "done"]
    assert "every case done" in run.stdout

    run = batch(cohort, "--out-root", out, "--smoothness", "0.5")  # a changed option reruns every case
    assert run.returncode == 0, run.stderr
    assert [row["status"] for row in summary(out).values()] == ["done", "done", "done"]


def test_a_shard_runs_every_nth_case_into_its_own_summary(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1",
           "SLURM_ARRAY_TASK_COUNT": "2"}
    run = batch(cohort, "--out-root", out, env=env)
    assert run.returncode == 0, run.stderr
    assert "shard 1 of 2 (from Slurm (SLURM_ARRAY_TASK_ID=2), counted from 0): 1 of 3 cases" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["patient092", "summary.shard-1-of-2.csv"]
    assert summary(out, "summary.shard-1-of-2.csv")["patient092"]["status"] == "done"


def test_ctrl_c_leaves_the_summary_consistent_and_no_partial_set(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.commands.cli", "batch", str(cohort), "--out-root",
                                str(out), "--refine", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.glob(".patient092.fsdiffreg-stage-*")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    rows = summary(out)
    assert {case: row["status"] for case, row in rows.items()} == {
        "patient091": "done", "patient092": "interrupted", "missing": "pending"}
    assert sorted(p.name for p in out.iterdir()) == ["patient091", "summary.csv"]


@pytest.mark.parametrize("text, words", [
    ("id,fixed\na,b\n", "line 1 (the header): give the columns"),
    ("id,fixed,moving,extra\na,b,c,d\n", "line 1 column 'extra': not a column of a register manifest"),
    ("id,fixed,moving\na,b,c\na,d,e\n", "line 3 column 'id': 'a' is the id of line 2 too"),
    ("id,fixed,moving\n../up,b,c\n", "line 2 column 'id': '../up' is not a folder name"),
    ("id,fixed,moving\na,,c\n", "line 2 column 'fixed': empty"),
    ("id,fixed,moving\na,b\n", "line 2: 2 fields, the header has 3"),
    ("id,cine,labels,reference_frame\na,b,c,0\n", "line 2 column 'reference_frame': frames are counted from 1"),
    ("id,fixed,moving\n", "no cases below the header"),
])
def test_a_bad_manifest_is_one_line_naming_the_line_and_column(tmp_path: Path, text: str, words: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_manifest(manifest)


def test_a_bad_manifest_runs_nothing(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,fixed,moving\na,b,c\na,d,e\n")
    run = batch(manifest, "--out-root", tmp_path / "out")
    assert run.returncode == 2
    assert run.stderr == f"fsdiffreg: error: manifest {manifest} line 3 column 'id': 'a' is the id of line 2 too\n"
    assert not (tmp_path / "out").exists()


def test_a_track_manifest_of_a_dicom_cine_measures_ef(tmp_path: Path) -> None:
    if not SUNNYBROOK.is_dir():
        pytest.skip(f"Sunnybrook cines not found at {SUNNYBROOK}")
    write_dicom(sitk.ReadImage(str(SUNNYBROOK / "SCD0000101_4d.nii.gz")), tmp_path / "dicom", per_slice_series=True)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,cine,labels,reference_frame\nscd101,dicom,{SUNNYBROOK / 'SCD0000101_frame19_gt.nii.gz'},"
                        "19\n")
    run = batch(manifest, "--out-root", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    row = summary(tmp_path / "out")["scd101"]
    assert row["status"] == "done" and 5 < float(row["lv_ef_percent"]) < 60, row
    assert row["ncc_before"] == "" and float(row["folding_percent"]) >= 0
    metrics = json.loads((tmp_path / "out" / "scd101" / "metrics.json").read_text())
    assert metrics["options"]["reference_frame"] == 19 and metrics["inputs"]["cine"]["files"] == 240
    assert len(json.loads((tmp_path / "out" / "scd101" / "function.json").read_text())) > 0


def test_dask_local_cluster_runs_the_cases_and_a_killed_workers_case_runs_again(cohort: Path, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.commands.cli", "batch", str(cohort), "--out-root",
                                str(out), "--refine", "0", "--dask", "local:2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list(out.glob(".patient09*.fsdiffreg-stage-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    workers = [child for child in psutil.Process(process.pid).children(recursive=True)
               if "spawn_main" in " ".join(child.cmdline())]
    assert len(workers) == 2, [w.cmdline() for w in workers]
    workers[0].kill()  # both are mid-case: one case is lost with its worker
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err
    assert not workers[0].is_running()
    assert "Restarting worker" in err  # dask's nanny saw its worker die and started another
    rows = summary(out)
    assert {case: row["status"] for case, row in rows.items()} == {
        "patient091": "done", "patient092": "done", "missing": "failed"}, err
    assert sorted(p.name for p in out.iterdir()) == ["patient091", "patient092", "summary.csv"]
    for case in ("patient091", "patient092"):
        assert {p.name for p in (out / case).iterdir()} == REGISTER_SET | {"warped_labels.nii.gz"}


def test_a_folders_sha256_covers_its_subfolders_and_not_hidden_files(tmp_path: Path) -> None:
    from FSDiffRegLib.outputs.sets import describe

    (tmp_path / "cine" / "slice01").mkdir(parents=True)
    (tmp_path / "cine" / "slice01" / "IM_00.dcm").write_bytes(b"one")
    before = describe(tmp_path / "cine")
    assert before["files"] == 1
    (tmp_path / "cine" / ".DS_Store").write_bytes(b"finder")
    assert describe(tmp_path / "cine") == before
    (tmp_path / "cine" / "slice01" / "IM_00.dcm").write_bytes(b"two")
    assert describe(tmp_path / "cine")["sha256"] != before["sha256"]


def test_ctrl_c_under_dask_leaves_the_summary_consistent_and_nothing_behind(cohort: Path, tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: the command, dask's nannies and workers, mid-case."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("distributed")
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.commands.cli", "batch", str(cohort), "--out-root",
                                str(out), "--refine", "0", "--dask", "local:2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.time() + 300
    while len(list(out.glob(".patient09*.fsdiffreg-stage-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    family = psutil.Process(process.pid).children(recursive=True)
    assert len([p for p in family if "spawn_main" in " ".join(p.cmdline())]) == 2  # both workers are mid-case
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 130, err
    assert not [p for p in psutil.wait_procs(family, timeout=30)[1]], "dask processes left running"
    rows = summary(out)
    assert list(rows) == ["patient091", "patient092", "missing"]
    done = sorted(case for case, row in rows.items() if row["status"] == "done")
    assert {row["status"] for case, row in rows.items() if case not in done} <= {"interrupted", "pending", "failed"}
    assert rows["patient091"]["status"] in ("done", "interrupted") and rows["patient092"]["status"] in (
        "done", "interrupted")
    assert sorted(p.name for p in out.iterdir()) == done + ["summary.csv"]  # no partial set, no hidden folder
    for case in done:
        assert {p.name for p in (out / case).iterdir()} == REGISTER_SET | {"warped_labels.nii.gz"}
    assert list(scratch.iterdir()) == []  # no temporary file: dask's scratch space went whole
