"""What a command reports while it runs, as structured events: written and read here alone, one JSON object a line.

The library reports through one callback type, ``Report`` (an ``Event`` -> None). Each event has a ``type``:

- ``stage``: a stage begins (``stage``: reading, loading, registering, network, refining, writing...);
- ``progress``: ``step`` of ``total`` done in ``stage``, and ``fraction``, the share of the stage's work done
  (refinement steps on a fine level weigh more than coarse ones);
- ``note``: anything else worth telling;
- ``result``: what the command gives (``data``);
- ``error``: the one-line reason a command stopped.

``text`` says what the event means, for people. The command line prints it as the human log,
``fsdiffreg: <text>`` on stderr (``human``). With ``FSDIFFREG_EVENTS=1`` in its environment (the Slicer worker sets it)
it also prints each event on the same stream as one marked line, ``MARK`` and the JSON object, so that
events and log lines stay in order; a reader (``FSDiffRegMRML.process``) takes them with ``read`` and
never parses the prose. Torch-free: the Slicer GUI imports it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

MARK = "fsdiffreg-event "  # the start of an event's line
SWITCH = "FSDIFFREG_EVENTS"  # environment variable: "1" prints the events beside the human log
TYPES = ("stage", "progress", "note", "result", "error")
FINISHED = "fsdiffreg: finished"  # the worker's line after each command: FINISHED <token> <exit status>


@dataclass(frozen=True)
class Event:
    """One thing a command reports; ``text`` says what it means."""

    type: str
    text: str
    stage: str = ""
    step: int | None = None
    total: int | None = None
    fraction: float | None = None
    data: dict = field(default_factory=dict)


Report = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The report of a caller that wants none."""


def stage(name: str, text: str = "") -> Event:
    """Stage ``name`` begins (``text``: how to say it, default the name)."""
    return Event("stage", text or name, stage=name)


def progress(name: str, step: int, total: int, text: str, fraction: float | None = None) -> Event:
    """``step`` of ``total`` done in stage ``name``; ``fraction`` of its work (default step / total)."""
    share = fraction if fraction is not None else step / max(total, 1)
    return Event("progress", text, stage=name, step=step, total=total, fraction=min(max(share, 0.0), 1.0))


def note(text: str) -> Event:
    return Event("note", text)


def result(text: str, data: dict) -> Event:
    return Event("result", text, data=data)


def error(text: str) -> Event:
    return Event("error", text)


def prefixed(report: Report, prefix: str) -> Report:
    """A report that puts ``prefix: `` before each event's text (a batch case's id)."""
    return lambda event: report(replace(event, text=f"{prefix}: {event.text}"))


def line(event: Event) -> str:
    """The event's marked line (without a newline): ``MARK`` and a JSON object, empty fields left out."""
    fields = {k: v for k, v in asdict(event).items() if v not in (None, "", {})}
    return MARK + json.dumps(fields, allow_nan=False, ensure_ascii=True)


def read(text: str) -> Event | None:
    """The event a marked line holds; None for any other line (a human log line, a warning)."""
    if not text.startswith(MARK):
        return None
    try:
        value = json.loads(text[len(MARK):])
        return Event(**value) if isinstance(value, dict) and value.get("type") in TYPES else None
    except (ValueError, TypeError):
        return None


def wanted() -> bool:
    """Whether the events are printed beside the human log (``FSDIFFREG_EVENTS=1``)."""
    return os.environ.get(SWITCH) == "1"


def human(event: Event) -> str:
    """The event's log line for people: ``fsdiffreg: <text>``, ``fsdiffreg: error: <text>`` for an error."""
    return f"fsdiffreg: error: {event.text}" if event.type == "error" else f"fsdiffreg: {event.text}"


def to_stderr(event: Event) -> None:
    """The command line's report: the human line, then the event's marked line where wanted."""
    print(human(event), file=sys.stderr, flush=True)
    if wanted():
        print(line(event), file=sys.stderr, flush=True)
