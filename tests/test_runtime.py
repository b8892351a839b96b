"""Where training runs and how: the device, the precision and whether blocks are compiled."""

import pytest
import torch

from frugal_lm.runtime import CPU_COMPILE_MIN_STEPS, compiles, uses_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("setting", [True, False])
def test_an_explicit_compile_setting_is_kept(setting):
    assert compiles(setting, CPU, 1) is setting and compiles(setting, CUDA, 10**6) is setting


def test_auto_compiles_on_cuda_and_on_a_cpu_only_for_long_runs_with_a_compiler(monkeypatch):
    assert compiles("auto", CUDA, 1)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    assert not compiles("auto", CPU, CPU_COMPILE_MIN_STEPS - 1)
    assert compiles("auto", CPU, CPU_COMPILE_MIN_STEPS)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert not compiles("auto", CPU, 10**6)  # no C++ compiler: eager, not an error


def test_auto_precision_is_bf16_on_cuda_and_on_a_native_bf16_cpu_only_for_wide_models(monkeypatch):
    import frugal_lm.runtime as runtime

    assert uses_bf16("auto", CUDA, 64) and uses_bf16("bf16", CPU, 64) and not uses_bf16("fp32", CUDA, 4096)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert not uses_bf16("auto", CPU, 128) and uses_bf16("auto", CPU, 512)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert not uses_bf16("auto", CPU, 4096)
