"""`frugal report RUN_DIR`: PNG plots and a markdown summary from `metrics.jsonl`.

Reads only the metrics file (and the run's config), so it works on a finished run, a
running one, or one copied off a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from frugal_lm.errors import FrugalError

PLOTS = {
    "loss": ("loss", "training loss (validation loss dotted)"),
    "accuracy": ("token_accuracy", "token accuracy"),
    "exact": ("exact_accuracy", "exact-sequence accuracy"),
    "lr": ("lr", "learning rate"),
    "throughput": ("tokens_per_second", "tokens / second"),
    "moe_load_max": ("moe_load_max", "MoE: busiest expert's load over the mean (1 = balanced)"),
}


# Per-step batch metrics are noisy: these are drawn faint, with an exponential average on top.
SMOOTHED = ("loss", "token_accuracy", "exact_accuracy")


def smoothed(values, points_per_window: int = 50) -> list[float]:
    """Bias-corrected exponential moving average spanning ~1/50 of the run (at least 1 step)."""
    decay = 1 - 2 / (max(1, len(values) // points_per_window) + 1)
    average, weight, out = 0.0, 0.0, []
    for value in values:
        average, weight = decay * average + (1 - decay) * value, decay * weight + (1 - decay)
        out.append(average / weight)
    return out


@dataclass
class Report:
    summary_path: Path
    plot_paths: list[Path]


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FrugalError(f"{run_dir}: no metrics.jsonl (is this a training run directory?)")
    records, lines = [], path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # The last line of a killed run can be cut short; anything earlier is corruption.
            if number == len(lines):
                break
            raise FrugalError(f"{path}:{number}: not valid JSON") from None
    if not records:
        raise FrugalError(f"{path}: no steps logged yet")
    return records


def plot_expert_load(records: list[dict], path: Path, plt) -> Path | None:
    """A heatmap of each MoE layer's load per expert over the run (`moe_load`: L x E fractions,
    logged every `log_every` steps), as a multiple of the fair share: 1 is balanced, 0 idle."""
    logged = [(r["step"], r["moe_load"]) for r in records if r.get("moe_load")]
    if not logged:
        return None
    steps = [step for step, _ in logged]
    layers, experts = len(logged[0][1]), len(logged[0][1][0])
    # Rows: layer-major (layer 0's experts first); columns: the logged steps.
    rows = [
        [load[layer][expert] * experts for _, load in logged] for layer in range(layers) for expert in range(experts)
    ]
    figure, axis = plt.subplots(figsize=(8, min(12, 2 + 0.12 * len(rows))))
    image = axis.imshow(
        rows,
        aspect="auto",
        interpolation="nearest",
        cmap="magma",
        vmin=0,
        vmax=max(2.0, max(map(max, rows))),
        extent=(steps[0], steps[-1], len(rows), 0),
    )
    for layer in range(1, layers):
        axis.axhline(layer * experts, color="white", linewidth=0.6)
    axis.set_yticks([(layer + 0.5) * experts for layer in range(layers)], [f"layer {layer}" for layer in range(layers)])
    axis.set_xlabel("step")
    axis.set_title("MoE load per expert (rows) and layer, x fair share")
    figure.colorbar(image, ax=axis, label="tokens / fair share")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(run_dir: Path) -> Report:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    plot_paths = []
    for name, (key, title) in PLOTS.items():
        values = [r.get(key) for r in records]
        points = [(s, v) for s, v in zip(steps, values) if v is not None]
        if not points:
            continue
        figure, axis = plt.subplots(figsize=(7, 4))
        x, y = zip(*points)
        if key in SMOOTHED:
            axis.plot(x, y, linewidth=0.8, alpha=0.3, color="C0")
            axis.plot(x, smoothed(y), linewidth=1.6, color="C0", label="smoothed")
        else:
            axis.plot(x, y, linewidth=1.2)
        validation = [(s, r["val_loss"]) for s, r in zip(steps, records) if key == "loss" and "val_loss" in r]
        if validation:
            axis.plot(*zip(*validation), "o:", color="C1", markersize=3, label="validation")
        if key in SMOOTHED or validation:
            axis.legend()
        axis.set_xlabel("step")
        axis.set_title(title)
        if key == "loss":
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        plot_paths.append(path)
    load_path = plot_expert_load(records, out / "moe_load.png", plt)
    if load_path is not None:
        plot_paths.append(load_path)

    last = records[-1]
    best = min(records, key=lambda r: r["loss"])
    tail = records[-max(1, len(records) // 10) :]
    rows = [
        ("steps", f"{last['step']:,}"),
        ("tokens", f"{last['tokens']:,}"),
        ("final loss (mean of last 10%)", f"{sum(r['loss'] for r in tail) / len(tail):.4f}"),
        ("best loss", f"{best['loss']:.4f} at step {best['step']}"),
        ("final token accuracy", f"{last['token_accuracy']:.4f}"),
        ("final exact accuracy", f"{last['exact_accuracy']:.4f}"),
        ("wall time of the last session", f"{last['elapsed_s'] / 60:.1f} min"),
        ("tokens / second (last session)", f"{last.get('tokens_per_second', float('nan')):,.0f}"),
        ("dollars (last session)", f"{last.get('dollars', 0.0):.2f}"),
    ]
    if "moe_load_max" in last:
        rows.append(("MoE busiest expert / mean (last step)", f"{last['moe_load_max']:.2f}"))
    lines = [f"# Training report: {run_dir}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    comparison_path = run_dir / "plan_vs_actual.json"
    if comparison_path.is_file():
        comparison = json.loads(comparison_path.read_text())
        lines += ["", "## Plan vs actual (last session)", "", "| | planned | actual |", "|---|---|---|"]
        lines += [
            f"| {key} | {comparison['plan'][key]:.4g} | {comparison['actual'][key]:.4g} |" for key in comparison["plan"]
        ]
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plot_paths], ""]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines))
    return Report(summary, plot_paths)
