"""The lm-eval wrapper's command line: a CPU machine needs no --device."""

import torch

from frugal_lm.evals.lm_eval_cli import with_default_device


def test_no_cuda_and_no_device_given_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert with_default_device(["--model", "frugal"]) == ["--model", "frugal", "--device", "cpu"]
    assert with_default_device(["--device", "cuda:1"]) == ["--device", "cuda:1"]  # the user's choice stands
    assert with_default_device(["--device=mps"]) == ["--device=mps"]


def test_with_cuda_lm_evals_own_default_stays(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert with_default_device(["--model", "frugal"]) == ["--model", "frugal"]
