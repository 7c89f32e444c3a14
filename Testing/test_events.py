"""Structured events across processes: written and read by FSDiffRegLib.events alone, beside a readable log."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from FSDiffRegLib import events


def cli(*args: str, switch: str | None = "1") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != events.SWITCH}
    if switch is not None:
        env[events.SWITCH] = switch
    return subprocess.run([sys.executable, "-m", "FSDiffRegLib.commands.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_event_crosses_as_one_marked_json_line_and_comes_back_whole():
    said = [events.stage("reading", "reading images"), events.note("function.png skipped"),
            events.progress("refining", 9, 20, "refining: 9 of 20 steps done (10 % of the work)", 0.1),
            events.result("registered", {"out_dir": "/tmp/x", "frames": [1, 2]}), events.error("no such file: a b")]
    for event in said:
        text = events.line(event)
        assert text.startswith(events.MARK) and "\n" not in text
        assert events.read(text) == event


def test_other_lines_are_no_events():
    for text in ["fsdiffreg: reading images", "UserWarning: something", events.MARK + "{not json",
                 events.MARK + '{"type": "gossip", "text": "x"}', events.MARK + '["progress"]',
                 events.MARK + '{"type": "note", "text": "x", "colour": "red"}', ""]:
        assert events.read(text) is None


def test_progress_says_its_share_of_the_work():
    assert events.progress("network", 3, 12, "network: 3 of 12 frames registered").fraction == 0.25
    assert events.progress("network", 0, 0, "none").fraction == 0.0  # no division by zero


def test_a_prefixed_report_names_the_case():
    said: list[events.Event] = []
    events.prefixed(said.append, "case7")(events.stage("loading", "loading weights on cpu"))
    assert said == [events.stage("loading", "case7: loading weights on cpu")]


def test_the_command_line_prints_events_only_when_asked():
    """For people, a line per stage and one error line; with FSDIFFREG_EVENTS=1 each line is followed by its event."""
    plain = cli("register", "absent_fixed.nii.gz", "absent_moving.nii.gz", "--out-dir", "unused", switch=None)
    asked = cli("register", "absent_fixed.nii.gz", "absent_moving.nii.gz", "--out-dir", "unused")
    assert plain.returncode == asked.returncode == 2
    human = plain.stderr.splitlines()
    assert human == ["fsdiffreg: reading images", "fsdiffreg: error: fixed image not found: absent_fixed.nii.gz"]
    lines = asked.stderr.splitlines()
    said = [events.read(line) for line in lines[1::2]]
    assert lines[::2] == human and [events.human(event) for event in said] == human
    assert [(event.type, event.stage) for event in said] == [("stage", "reading"), ("error", "")]


def test_an_argument_refusal_is_an_error_event_too():
    lines = cli("register", "--refine", "-1").stderr.splitlines()
    said = [events.read(line) for line in lines if events.read(line) is not None]
    assert len(said) == 1 and said[0].type == "error" and "argument" in said[0].text
    assert any(line.startswith("fsdiffreg register: error: ") for line in lines)
