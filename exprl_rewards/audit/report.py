"""Write an audit to a folder: every figure as JSON, a Markdown summary, PNG plots.

``report.json``        every figure, intervals as ``{"value", "low", "high"}``
``REPORT.md``          the summary a person reads
``samples.jsonl``      one line per judged unit (raw score, label, split)
``calibrator.json``    the headline calibrator, fitted on the fit split
``calibrators/*.json`` every fitted calibrator
``plots/*.png``        reliability before/after, score histograms by label, score vs
                       length; only with matplotlib (``pip install exprl-rewards[plot]``)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..rewards.calibration import SavedCalibrator, probs_matrix
from ..rewards.metrics import Estimate, reliability_bins
from .run import Sample

__all__ = ["write_report"]


def _jsonable(x: Any) -> Any:
    if isinstance(x, Estimate):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _fmt(x: Any) -> str:
    if isinstance(x, Estimate):
        return str(x)
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _markdown(report: dict[str, Any], headline: str, plots: list[str], note: str) -> str:
    meta, samples, parse = report["meta"], report["samples"], report["parse"]
    lines = [
        f"# Judge audit: {meta.get('dataset', '?')}",
        "",
        f"Judge `{meta.get('judge', '?')}`, mode `{meta['mode']}`, template "
        f"`{meta.get('template_name', '')}` ({meta['template']}). {report['items']} rollouts, "
        f"{samples['total']} judged units. Calibrators were fitted on the **fit** split "
        f"({samples['fit']} labelled units) and every figure below is measured on the "
        f"held-out **eval** split ({samples['eval']} units, positive rate "
        f"{_fmt(samples['eval_positive_rate'])}); questions never straddle the split. "
        "Intervals: 95% bootstrap over questions.",
        "",
        f"Parse failures: {parse['unscored']} of {parse['requests']} judge requests "
        f"({_fmt(parse['failure_rate'])}); {parse['logprob_scored']} scored from logprobs.",
        "",
        "| calibrator | ECE | adaptive ECE | Brier | AUROC | accuracy | balanced acc. | kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ("ece", "adaptive_ece", "brier", "auroc", "accuracy", "balanced_accuracy", "kappa")
    for name, q in report["eval"].items():
        mark = " (headline)" if name == headline else ""
        lines.append(f"| {name}{mark} | " + " | ".join(_fmt(q[k]) for k in keys) + " |")
    for name, why in report.get("calibrators_refused", {}).items():
        lines.append(f"\n**`{name}` is not saved**: {why}.")
    lines += ["", "Judge-corrected pass rate (Rogan-Gladen; TPR/FPR from the fit split):", ""]
    lines += ["| calibrator | observed | corrected | true |", "|---|---|---|---|"]
    for name, q in report["eval"].items():
        rg = q["rogan_gladen"]
        lines.append(
            f"| {name} | {_fmt(rg['observed_pass_rate'])} | "
            f"{_fmt(rg['corrected_pass_rate'])} | {_fmt(rg['true_pass_rate'])} |"
        )
    if any("processbench" in q for q in report["eval"].values()):
        lines += ["", "ProcessBench metric (first step below the threshold is the error):", ""]
        lines += ["| calibrator | F1 | erroneous acc. | correct acc. |", "|---|---|---|---|"]
        for name, q in report["eval"].items():
            pb = q["processbench"]
            lines.append(
                f"| {name} | {_fmt(pb['f1'])} | {_fmt(pb['error_accuracy'])} | "
                f"{_fmt(pb['correct_accuracy'])} |"
            )
    lines += ["", "Bias probes (Spearman of the raw score):", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in report["bias"].items()]
    inj = report["injection"]
    if inj:
        lines += [
            "",
            f"Prompt injection, appended to {inj['n']} {inj['rollouts']} rollouts "
            "(success: the score rises a full point or reaches the top):",
            "",
        ]
        for name, r in inj.items():
            if isinstance(r, dict):
                lines.append(
                    f"- {name}: success {_fmt(r['success_rate'])}, mean shift "
                    f"{_fmt(r['mean_shift'])}, unscored {r['unscored']}"
                )
    lines += ["", "Plots: " + (", ".join(f"`{p}`" for p in plots) if plots else note), ""]
    return "\n".join(lines)


def _plots(
    out: Path, samples: Sequence[Sample], calibrated: dict[str, np.ndarray], headline: str
) -> tuple[list[str], str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "not drawn: matplotlib is not installed (pip install 'exprl-rewards[plot]')"
    raw = np.array([s.raw for s in samples], dtype=float)
    if not np.isfinite(raw).any():
        return [], "not drawn: the judge scored no unit (see the parse failures above)"
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    ev = np.array([s.split == "eval" for s in samples])
    y = np.array([s.label for s in samples])
    keep = ev & ~np.isnan(y)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    # The headline calibrator is missing when the fit split had too few scored units of
    # both labels to fit it: the plots then show the linear map alone.
    for name in dict.fromkeys(n for n in ("linear", headline) if n in calibrated):
        points = reliability_bins(calibrated[name][keep], y[keep])
        xs, ys = [b["score"] for b in points], [b["right"] for b in points]
        errors = [[b["right"] - b["low"] for b in points], [b["high"] - b["right"] for b in points]]
        ax.errorbar(xs, ys, yerr=errors, fmt="o-", capsize=3, label=f"{name} (95% Wilson)")
        for b in points:  # how many units each point rests on
            ax.annotate(f"n={b['n']:.0f}", (b["score"], b["right"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)  # fmt: skip
    ax.set(xlabel="calibrated score", ylabel="fraction right",
           title=f"Reliability (eval split, {int(keep.sum())} units)")  # fmt: skip
    ax.legend()
    paths.append(folder / "reliability.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(np.nanmin(raw), np.nanmax(raw) + 1e-9, 21)
    for label, name in ((1.0, "right"), (0.0, "wrong")):
        m = ~np.isnan(raw) & (y == label)
        ax.hist(raw[m], bins=bins.tolist(), alpha=0.6, label=f"{name} ({m.sum()})")
    ax.set(xlabel="raw judge score", ylabel="units", title="Scores by label")
    ax.legend()
    paths.append(folder / "histogram.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    length = np.array([s.length for s in samples])
    for label, name in ((1.0, "right"), (0.0, "wrong")):
        m = ~np.isnan(raw) & (y == label)
        ax.scatter(length[m], raw[m], s=6, alpha=0.5, label=name)
    ax.set(xlabel="judged text length (chars)", ylabel="raw judge score", title="Score vs length")
    ax.legend()
    paths.append(folder / "length.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return [str(p.relative_to(out)) for p in paths], ""


def write_report(
    out: str | Path,
    report: dict[str, Any],
    samples: Sequence[Sample],
    calibrators: dict[str, SavedCalibrator],
    *,
    headline: str,
    low: int,
    high: int,
) -> Path:
    """Write the report folder; returns the path of ``REPORT.md``."""
    out = Path(out)
    (out / "calibrators").mkdir(parents=True, exist_ok=True)
    for name, cal in calibrators.items():
        cal.save(out / "calibrators" / f"{name}.json")
    if headline in calibrators:
        calibrators[headline].save(out / "calibrator.json")
    raw = np.array([s.raw for s in samples])
    probs = probs_matrix([s.probs for s in samples], high - low + 1)
    calibrated = {
        name: cal(raw, low=low, high=high, probs=probs) for name, cal in calibrators.items()
    }
    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for i, s in enumerate(samples):
            row = asdict(s)
            row["calibrated"] = {name: float(c[i]) for name, c in calibrated.items()}
            f.write(json.dumps(_jsonable(row)) + "\n")
    plots, note = _plots(out, samples, calibrated, headline)
    report = dict(report, plots=plots, plots_note=note or None)
    (out / "report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    summary = out / "REPORT.md"
    summary.write_text(_markdown(report, headline, plots, note), encoding="utf-8")
    return summary
