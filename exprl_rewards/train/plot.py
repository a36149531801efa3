"""Curves of runs side by side: ``python -m exprl_rewards.train plot RUN... -o FILE.png``.

Each run folder's ``metrics.jsonl`` gives one line per panel: training reward, KL to the
reference, token entropy, and response length, over steps; a Stage I run with canaries
adds a panel of the canaries' reward (dashed) against the honest reward, with the first
hack alarm marked. A learning run next to its
control (``--lr 0``, the same seeds: the same prompts and sampling seeds each step) shows
what the updates did beyond the noise of sampling.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingExtraError

__all__ = ["PANELS", "plot_runs"]

PANELS = (
    ("reward_mean", "training reward (mean over rollouts)"),
    ("kl", "KL to the reference (k3, per token)"),
    ("entropy", "token entropy (nats)"),
    ("response_tokens_mean", "response length (tokens)"),
    ("truncated_rate", "cut at the length limit (share)"),
    ("unscored_rate", "unscored by the judge (share)"),
)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The rows of ``run/metrics.jsonl``."""
    path = run / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}") from e
    return [json.loads(line) for line in lines if line.strip()]


def _values(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]


def _seeds(
    every: Sequence[Sequence[dict[str, Any]]], names: Sequence[str], key: str
) -> dict[str, tuple[list[int], list[list[float]]]]:
    """Per label, the steps and one curve per run: runs that share a label are seeds."""
    out: dict[str, tuple[list[int], list[list[float]]]] = {}
    for rows, name in zip(every, names, strict=True):
        steps, curves = out.setdefault(name, ([r["step"] for r in rows], []))
        curves.append(_values(rows[: len(steps)], key))
    return out


def plot_runs(runs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Draw each run's curves into one PNG; return its path. Runs given the same label
    are seeds of one setting: drawn as their mean, with the range of the seeds shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingExtraError("matplotlib", "plot") from e
    names = list(labels) if labels else [run.name for run in runs]
    every = [read_metrics(run) for run in runs]
    watched = any("hack/canary_reward" in r for rows in every for r in rows)
    n = len(PANELS) + watched
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4))
    for ax, (key, title) in zip(axes, PANELS, strict=False):
        for name, (steps, curves) in _seeds(every, names, key).items():
            n_steps = min(len(steps), *(len(c) for c in curves))
            grid = np.array([c[:n_steps] for c in curves], dtype=float)
            x = steps[:n_steps]
            with warnings.catch_warnings():  # a step no seed logged: a gap, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(grid, axis=0)
                low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
            seeds = f" ({len(curves)} seeds)" if len(curves) > 1 else ""
            ax.plot(x, mean, label=name + seeds)
            if len(curves) > 1:
                ax.fill_between(x, low, high, alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    for rows, name in zip(every, names, strict=True):
        steps = [r["step"] for r in rows]
        if watched:
            ax = axes[-1]
            colour = axes[0].get_lines()[list(dict.fromkeys(names)).index(name)].get_color()
            ax.plot(steps, _values(rows, "hack/honest_reward"), color=colour)
            ax.plot(steps, _values(rows, "hack/canary_reward"), color=colour, linestyle="--")
            alarms = [r["step"] for r in rows if r.get("hack/alarm")]
            if alarms:
                ax.axvline(alarms[0], color=colour, linestyle=":", linewidth=1)
                ax.annotate(f"alarm {alarms[0]}", (alarms[0], 0.95), fontsize=7,
                            xycoords=("data", "axes fraction"), color=colour)  # fmt: skip
            ax.set_title("honest (solid) vs canary (dashed) reward", fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
