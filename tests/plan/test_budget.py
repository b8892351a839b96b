import numpy as np
import pytest

from frugal_lm.config import load_model_config
from frugal_lm.errors import FrugalError
from frugal_lm.plan.budget import (
    DEFAULT_MFU,
    REFERENCE_RUNS,
    SECONDS_PER_HOUR,
    affordable_runs,
    budget_run,
    plan_run,
    read_data_profile,
)
from frugal_lm.plan.devices import DEVICES, get_device

H100 = DEVICES["h100"]


def implied_mfu(run, device):
    """The MFU at which our FLOP model reproduces a published run's GPU-hours."""
    plan = plan_run(load_model_config(run.preset, "hrm"), run.preset, run.processed_tokens, run.gpus, device, mfu=1.0)
    return plan.wall_hours / run.hours


def test_paper_runs_imply_plausible_mfu_and_one_mfu_predicts_both():
    mfus = [implied_mfu(run, H100) for run in REFERENCE_RUNS]
    assert all(0.30 <= mfu <= 0.55 for mfu in mfus), mfus
    shared = sum(mfus) / len(mfus)
    assert DEFAULT_MFU == pytest.approx(shared, abs=0.01)
    for run in REFERENCE_RUNS:
        plan = plan_run(
            load_model_config(run.preset),
            run.preset,
            run.processed_tokens,
            run.gpus,
            H100,
            mfu=shared,
            price_per_gpu_hour=run.price_per_gpu_hour,
        )
        assert plan.wall_hours == pytest.approx(run.hours, rel=0.05)
        assert plan.dollars == pytest.approx(run.dollars, rel=0.05)


def test_hrm_costs_more_than_6nd_and_fits_xl_on_16_h100():
    plan = plan_run(load_model_config("XL"), "XL", 60e9, 16, H100)
    assert plan.parameters == pytest.approx(1.18e9, rel=0.01)
    assert 2.0 < plan.total_flops / plan.dense_6nd_flops < 3.5  # 8 passes, ~4.6 of them differentiated
    assert plan.fits and not plan.warnings


def test_warns_when_it_will_not_fit():
    plan = plan_run(load_model_config("XXL"), "XXL", 1e9, 1, DEVICES["rtx-4090"])
    assert not plan.fits
    assert "will not fit" in plan.warnings[0]


def test_reverse_question_inverts_forward_plan():
    answers = {a.preset: a for a in affordable_runs(1472.0, 46.0, H100)}
    assert answers["XL"].gpus == 16
    forward = plan_run(load_model_config("XL"), "XL", answers["XL"].processed_tokens, 16, H100)
    # forward uses the bp_steps warmup average, reverse the final bp_steps: a bit cheaper.
    assert 0.9 < forward.wall_hours / 46.0 <= 1.0
    with pytest.raises(FrugalError):
        affordable_runs(10.0, 46.0, H100)


def six_n_active_d_dollars(active_parameters, tokens, device, mfu, price):
    """The field's rule of thumb: 6 x active parameters x tokens at the MFU and price."""
    return 6.0 * active_parameters * tokens / (device.peak_flops * mfu) / SECONDS_PER_HOUR * price


@pytest.mark.parametrize("preset", ["grok1", "grok1-1t"])
def test_moe_presets_cost_six_times_active_parameters_times_tokens(preset):
    """A Transformer MoE spends ~6 N_active D: what the planner's exact count adds (attention)
    and leaves out (embedding lookup, LM head on unlabelled tokens) is small at this size."""
    config = load_model_config(preset)
    plan = plan_run(config, preset, 1e12, 1024, H100, mfu=0.4, price_per_gpu_hour=2.0, expert_parallel=8)
    expected = six_n_active_d_dollars(plan.active_parameters, 1e12, H100, 0.4, 2.0)
    assert plan.dollars == pytest.approx(expected, rel=0.05)
    assert plan.active_parameters < plan.parameters / 3


def test_budget_run_spends_the_budget_on_tokens():
    config = load_model_config("grok1")
    plan = budget_run(config, "grok1", 2e6, 1024, H100, expert_parallel=8, activation_checkpointing=True)
    assert plan.dollars == pytest.approx(2e6, rel=1e-6)
    assert plan.wall_hours == pytest.approx(2e6 / 2.0 / 1024)
    assert plan.all_to_all.bytes > 0
    # HRM: the bp_steps warmup's average depends on the step count; the refinements settle it.
    hrm = budget_run(load_model_config("tiny", vocab_size=512), "tiny", 50.0, 1, H100, batch_tokens=1024)
    assert hrm.dollars == pytest.approx(50.0, rel=1e-3)


@pytest.mark.parametrize(
    "preset, gpus, expert_parallel, message",
    [
        ("grok1", 1024, 3, "expert_parallel=3 must divide model.moe.experts \\(8\\)"),
        ("grok1", 12, 8, "expert_parallel=8 must divide the number of GPUs \\(12\\)"),
        ("XL", 16, 2, "expert_parallel=2 needs a model with experts"),
    ],
)
def test_expert_parallel_errors_name_the_setting(preset, gpus, expert_parallel, message):
    with pytest.raises(FrugalError, match=message):
        plan_run(load_model_config(preset), preset, 1e9, gpus, H100, expert_parallel=expert_parallel)


def test_a_plan_without_experts_has_no_all_to_all_and_counts_all_parameters_active():
    plan = plan_run(load_model_config("XL"), "XL", 60e9, 16, H100)
    assert plan.all_to_all is None and plan.active_parameters == plan.parameters


def test_data_profile_from_mixed_set(tmp_path):
    for epoch in range(2):
        folder = tmp_path / f"epoch_{epoch}"
        folder.mkdir()
        np.save(folder / "inst_len.npy", np.array([3, 5], dtype=np.int64))
        np.save(folder / "resp_len.npy", np.array([4, 2], dtype=np.int64))
    profile = read_data_profile(tmp_path)
    assert profile.epochs == 2 and profile.tokens_per_epoch == 6 + 6
    assert profile.label_fraction == pytest.approx(6 / 12)
    with pytest.raises(FrugalError):
        read_data_profile(tmp_path / "missing")


def test_cpu_peak_is_measured():
    cpu = get_device("cpu")
    assert cpu.peak_flops > 1e8 and cpu.memory_bytes > 1e8
    with pytest.raises(FrugalError):
        get_device("tpu-v9")
