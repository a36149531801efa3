"""Summaries over seeds with intervals, the findings table, and the figure.

Every figure is a mean over seeds with a 95% Student-t interval (seeds are few, so not a
bootstrap); a difference against sparse-only is paired by seed (the same world and
prompts), which is what makes a small gap resolvable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtraError
from .race import RunResult

__all__ = ["Interval", "interval", "plot", "summarise", "table"]

# two-sided 95% quantiles of Student's t, by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip

Interval = tuple[float, float, float]  # mean, low, high


def interval(values: Sequence[float] | np.ndarray) -> Interval:
    """Mean and 95% t-interval of ``values`` (one per seed).

    >>> interval([1.0, 2.0, 3.0])
    (2.0, -0.4843, 4.4843)
    """
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    df = len(x) - 1
    t = _T95[max(d for d in _T95 if d <= df)] if df <= 30 else 1.96
    half = t * float(x.std(ddof=1)) / math.sqrt(len(x))
    return round(mean, 4), round(mean - half, 4), round(mean + half, 4)


def summarise(
    runs: list[RunResult], stage_one: int, sparse: list[RunResult] | None = None
) -> dict[str, Interval]:
    """One method's figures over seeds; ``sparse``: paired differences against it."""
    at = stage_one - 1
    out = {
        "unlocked_stage1": interval([r.curves["unlocked"][at] for r in runs]),
        "unlocked_final": interval([r.curves["unlocked"][-1] for r in runs]),
        "reward_stage1": interval([r.curves["reward"][at] for r in runs]),
        "pass1_stage1": interval([r.curves["pass1"][at] for r in runs]),
        "entropy_stage1": interval([r.curves["entropy"][at] for r in runs]),
        "quirk_stage1": interval([r.curves["quirk"][at] for r in runs]),
        "pass1": interval([r.final["pass1"] for r in runs]),
        "passk": interval([r.final["passk"] for r in runs]),
    }
    out.update(_alarm_figures(runs, stage_one))
    if sparse is not None:
        by_seed = {r.seed: r for r in sparse}
        diff = [r.final["pass1"] - by_seed[r.seed].final["pass1"] for r in runs]
        out["pass1_vs_sparse"] = interval(diff)
    return out


def _first(curve: np.ndarray, stage_one: int) -> float:
    """The first Stage I step (1-based) where ``curve`` is set, NaN if none."""
    hits = np.flatnonzero(curve[:stage_one] > 0)
    return float(hits[0] + 1) if hits.size else math.nan


def _alarm_figures(runs: list[RunResult], stage_one: int) -> dict[str, Interval]:
    """When the hack alarm fired (share of seeds; first step over the seeds that fired)
    against the step at which Stage I's pass@1 peaked (it falls after)."""
    if "alarm" not in runs[0].curves or not runs[0].curves["canary"].any():
        return {}
    out: dict[str, Interval] = {}
    for key, curve in (("alarm", "alarm"), ("divergence", "alarm_divergence")):
        steps = [_first(r.curves[curve], stage_one) for r in runs]
        fired = [s for s in steps if not math.isnan(s)]
        out[f"{key}_seeds"] = interval([float(not math.isnan(s)) for s in steps])
        if fired:
            out[f"{key}_step"] = interval(fired)
    out["pass1_peak_step"] = interval(
        [float(np.argmax(r.curves["pass1"][:stage_one]) + 1) for r in runs]
    )
    return out


def _cell(value: Interval, digits: int = 2) -> str:
    mean, low, high = value
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(rows: dict[str, dict[str, Interval]], columns: dict[str, str]) -> str:
    """A markdown table: one row per entry of ``rows``, ``columns`` maps key -> heading."""
    lines = ["| | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in rows.items():
        cells = [_cell(figures[key]) if key in figures else "" for key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _band(ax: Any, runs: list[RunResult], curve: str, label: str) -> None:
    y = np.array([r.curves[curve] for r in runs])
    mean = y.mean(axis=0)
    sem = y.std(axis=0, ddof=1) / math.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
    x = np.arange(1, y.shape[1] + 1)
    (line,) = ax.plot(x, mean, label=label, lw=1.4)
    ax.fill_between(x, mean - 1.96 * sem, mean + 1.96 * sem, color=line.get_color(), alpha=0.15)


def _stages(ax: Any, stage_one: int) -> None:
    """Mark where Stage I (the method's own reward) hands over to Stage II (sparse)."""
    ax.axvline(stage_one + 0.5, color="grey", ls=":", lw=1)
    ax.annotate(" Stage II: sparse reward", (stage_one + 0.5, 0.02), fontsize=7, color="grey",
                xycoords=("data", "axes fraction"))  # fmt: skip


def plot(results: dict[str, Any], stage_one: int, path: Path) -> Path:
    """The six-panel figure: the race's curves, the noise sweep, the exploitable judge."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingExtraError("matplotlib", "plot") from e
    race, noise = results["race"], results["noise"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [("unlocked", "prompts unlocked (solved at least once)"),
              ("pass1", "pass@1 (exact)"),
              ("entropy", "entropy of sampled tokens (nats)")]  # fmt: skip
    for ax, (curve, title) in zip(axes[0], panels, strict=True):
        for method, runs in race.items():
            _band(ax, runs, curve, method)
        _stages(ax, stage_one)
        ax.set(title=title, xlabel="update (Stage I | Stage II: sparse)")
    axes[0][0].legend(fontsize=7)
    ax = axes[1][0]
    sigmas = sorted(noise)
    for method in next(iter(noise.values())):
        ys = [interval([r.final["pass1"] for r in noise[s][method]]) for s in sigmas]
        ax.errorbar(sigmas, [y[0] for y in ys], yerr=[[y[0] - y[1] for y in ys],
                    [y[2] - y[0] for y in ys]], marker="o", capsize=3, label=method)  # fmt: skip
    sparse = interval([r.final["pass1"] for r in race["sparse"]])
    ax.axhspan(sparse[1], sparse[2], color="grey", alpha=0.2, label="sparse only")
    ax.set(title="final pass@1 against judge noise", xlabel="judge noise (score points)")
    ax.legend(fontsize=7)
    honest, exploited = race["outcome"], results["flaws"]["exploitable"]["outcome"]
    for ax, curve, title in ((axes[1][1], "reward", "outcome: the method's own reward"),
                             (axes[1][2], "pass1", "outcome: pass@1 (exact)")):  # fmt: skip
        _band(ax, honest, curve, "honest judge")
        _band(ax, exploited, curve, "exploitable judge")
        if curve == "reward":
            _band(ax, exploited, "quirk", "exploitable: rollouts with the quirk")
        _stages(ax, stage_one)
        ax.set(title=title, xlabel="update")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
