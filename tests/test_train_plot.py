"""The training plot: every panel a reader needs (truncation, unscored), and seeds drawn
as a mean with their range, so that a curve is not one seed's luck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exprl_rewards.train.plot import PANELS, _seeds, plot_runs

pytest.importorskip("matplotlib")


def run(folder: Path, rewards: list[float], truncated: float) -> Path:
    folder.mkdir(parents=True)
    rows = [{"step": i, "reward_mean": r, "kl": 0.01 * i, "entropy": 1.0,
             "response_tokens_mean": 40.0, "truncated_rate": truncated, "unscored_rate": 0.0}
            for i, r in enumerate(rewards)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_truncation_and_unscored_have_panels() -> None:
    keys = [key for key, _ in PANELS]
    assert "truncated_rate" in keys
    assert "unscored_rate" in keys


def test_runs_with_one_label_are_seeds_of_one_setting(tmp_path: Path) -> None:
    runs = [run(tmp_path / "a0", [0.1, 0.2, 0.3], 0.0), run(tmp_path / "a1", [0.3, 0.4, 0.5], 0.1),
            run(tmp_path / "c", [0.2, 0.2, 0.2], 0.0)]  # fmt: skip
    labels = ["stage I", "stage I", "control"]
    from exprl_rewards.train.plot import read_metrics

    grouped = _seeds([read_metrics(r) for r in runs], labels, "reward_mean")
    steps, curves = grouped["stage I"]
    assert steps == [0, 1, 2]
    assert curves == [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]]
    assert len(grouped["control"][1]) == 1
    out = plot_runs(runs, tmp_path / "curves.png", labels)
    assert out.stat().st_size > 10_000  # a drawn figure
