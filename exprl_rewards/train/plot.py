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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingExtraError

__all__ = ["PANELS", "plot_runs"]

PANELS = (
    ("reward_mean", "training reward (mean over rollouts)"),
    ("kl", "KL to the reference (k3, per token)"),
    ("entropy", "token entropy (nats)"),
    ("response_tokens_mean", "response length (tokens)"),
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


def plot_runs(runs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Draw each run's curves into one PNG; return its path."""
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
    for rows, name in zip(every, names, strict=True):
        steps = [r["step"] for r in rows]
        for ax, (key, title) in zip(axes, PANELS, strict=False):
            line = ax.plot(steps, _values(rows, key), label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
        if watched:
            ax = axes[-1]
            colour = line[0].get_color()
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
