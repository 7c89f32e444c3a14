"""Freed memory kept for reuse (FSDiffRegLib.commands.memory, issue 24): a process that ran ``fsdiffreg`` reuses the
pages of a large block freed, instead of faulting in fresh ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHILD = textwrap.dedent("""
    import json, resource, sys
    if sys.argv[1] == "cli":
        from FSDiffRegLib.commands.cli import main
        main(["batch", sys.argv[2], "--out-root", sys.argv[3]])  # refused before torch: the C heap as set by main
    counts = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = bytearray(1 << 28)  # 256 MiB, every page written
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block
    print(json.dumps(counts))
""")


def page_faults(tmp_path: Path, how: str) -> list[int]:
    """Page faults of allocating a 256 MiB block, freeing it and allocating it again, in a new process."""
    done = subprocess.run([sys.executable, "-c", CHILD, how, str(tmp_path / "no_manifest.csv"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_after_fsdiffreg_main_a_freed_block_is_reused_not_faulted_in_again(tmp_path: Path) -> None:
    plain = page_faults(tmp_path, "plain")
    if plain[0] < 10000:
        pytest.skip(f"this system backs a new block with few page faults ({plain[0]}): huge pages")
    assert plain[1] > plain[0] / 2  # glibc alone gives the block back and faults it in again
    kept = page_faults(tmp_path, "cli")
    assert kept[0] > 10000 and kept[1] < kept[0] / 10, kept
