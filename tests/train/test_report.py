import json

import pytest

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.train.report import write_report


def write_metrics(run_dir, n=20, torn_last_line=False):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "step": s,
                "epoch": 0,
                "loss": 5.0 / s,
                "token_accuracy": s / n,
                "exact_accuracy": s / (2 * n),
                "lr": 1e-3,
                "bp_steps": 2,
                "tokens": 100 * s,
                "grad_norm": 1.0,
                "elapsed_s": s * 0.5,
                "tokens_per_second": 200.0,
                "dollars": 0.01 * s,
            }
        )
        for s in range(1, n + 1)
    ]
    text = "\n".join(lines) + "\n" + ('{"step": 21, "lo' if torn_last_line else "")
    (run_dir / "metrics.jsonl").write_text(text)


def test_report_writes_plots_and_summary(tmp_path):
    write_metrics(tmp_path / "run", torn_last_line=True)
    report = write_report(tmp_path / "run")
    assert {p.name for p in report.plot_paths} == {"loss.png", "accuracy.png", "exact.png", "lr.png", "throughput.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report.plot_paths)
    summary = report.summary_path.read_text()
    assert "| steps | 20 |" in summary and "| best loss | 0.2500 at step 20 |" in summary


def test_report_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(FrugalError, match="no metrics.jsonl"):
        write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_smoothing_follows_the_trend_and_damps_the_noise():
    from frugal_lm.train.report import smoothed

    noisy = [10 - 0.01 * step + (1 if step % 2 else -1) for step in range(500)]  # a trend plus +-1 noise
    averaged = smoothed(noisy)
    assert averaged[0] == noisy[0]  # bias-corrected: no pull towards zero at the start
    assert all(abs(a - (10 - 0.01 * step)) < 0.3 for step, a in enumerate(averaged) if step > 50)


def test_report_draws_the_expert_load_of_an_moe_run(tmp_path):
    write_metrics(tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    for line in lines:
        line.update(moe_aux_loss=1.1, moe_z_loss=0.5, moe_load_max=1.5)
        if line["step"] % 5 == 0:  # 2 layers x 4 experts, logged every 5 steps
            line["moe_load"] = [[0.25, 0.25, 0.25, 0.25], [0.5, 0.3, 0.2, 0.0]]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = write_report(tmp_path / "run")
    names = {p.name for p in report.plot_paths}
    assert {"moe_load.png", "moe_load_max.png"} <= names
    assert "| MoE busiest expert / mean (last step) | 1.50 |" in report.summary_path.read_text()
