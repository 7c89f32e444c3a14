"""The refinement's Adam: torch.optim.Adam's steps exactly, and no torch._dynamo import for a registration."""

from __future__ import annotations

import subprocess
import sys

import torch

from FSDiffRegLib.pipeline.adam import Adam


def test_adam_takes_torch_adams_steps_exactly() -> None:
    torch.manual_seed(0)
    target = torch.randn(2, 3, 4, 5, 6)
    ours, theirs = (torch.zeros(2, 3, 4, 5, 6, requires_grad=True) for _ in range(2))
    optimizers = Adam([ours], lr=0.2), torch.optim.Adam([theirs], lr=0.2)
    for _ in range(25):
        for variable, optimizer in zip((ours, theirs), optimizers):
            optimizer.zero_grad(set_to_none=True)
            ((variable - target) ** 2 * target.abs()).sum().backward()
            optimizer.step()
        assert torch.equal(ours, theirs)


def test_a_refined_registration_imports_no_compiler() -> None:
    code = ("import sys, torch\n"
            "from FSDiffRegLib.model.config import Config\n"
            "from FSDiffRegLib.pipeline.refine import refine_flow\n"
            "from FSDiffRegLib.defaults import RefineOptions\n"
            "x = torch.rand(1, 1, 16, 32, 32) * 2 - 1\n"
            "flow = torch.zeros(1, 3, 16, 32, 32)\n"
            "refine_flow(flow, x, x.roll(1, -1), torch.zeros_like(x), Config.load('cpu'), RefineOptions(4))\n"
            "print('torch._dynamo' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
