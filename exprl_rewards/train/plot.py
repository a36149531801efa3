"""Curves of runs side by side: ``python -m exprl_rewards.train plot RUN... -o FILE.png``.

Each run folder's ``metrics.jsonl`` gives one line per panel: training reward, KL to the
reference, token entropy, and response length, over steps. A learning run next to its
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


def plot_runs(runs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Draw each run's curves into one PNG; return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingExtraError("matplotlib", "plot") from e
    names = list(labels) if labels else [run.name for run in runs]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for run, name in zip(runs, names, strict=True):
        rows = read_metrics(run)
        steps = [r["step"] for r in rows]
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            values = [r.get(key) for r in rows]
            ax.plot(steps, [float("nan") if v is None else v for v in values], label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
