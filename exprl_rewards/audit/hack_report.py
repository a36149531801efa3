"""The hack table: how exploitable a judge is, per probe family, without and with guards.

:func:`hack_report` grades the probes of :mod:`~exprl_rewards.audit.probes` twice, with
the pipeline as given (the audit's default: no guards) and with the default guards, in
one run sharing the judge and its cache. :func:`write_hacks` writes ``hacks.json``,
``HACKS.md`` and, with matplotlib, ``hacks.png`` (win rate per family, both settings).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from ..judges.guards import DEFAULT_GUARDS, get_guards
from ..rewards.metrics import Estimate
from ..rewards.pipeline import RewardPipeline
from .datasets import Labelled
from .probes import FAMILIES, hack_table

__all__ = ["hack_markdown", "hack_report", "write_hacks"]


def hack_report(
    pipeline: RewardPipeline,
    items: list[Labelled],
    *,
    questions: int = 30,
    seed: int = 0,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """The hack table with the pipeline's own guards and with the default guards."""
    guarded = replace_guards(pipeline, get_guards(",".join(DEFAULT_GUARDS)))
    runs = {"as given": pipeline, "default guards": guarded}
    return {
        "mode": pipeline.mode,
        "template": pipeline.template.name,
        "guards": {name: [g.name for g in p.guards] for name, p in runs.items()},
        "runs": {
            name: hack_table(p, items, limit=questions, seed=seed, bootstrap=bootstrap)
            for name, p in runs.items()
        },
    }


def replace_guards(pipeline: RewardPipeline, guards: tuple[Any, ...]) -> RewardPipeline:
    """A shallow copy of ``pipeline`` with other guards (same judge, cache and template)."""
    other = copy.copy(pipeline)
    other.guards = tuple(guards)
    return other


def _fmt(e: Any) -> str:
    if isinstance(e, dict):
        e = Estimate(**{k: (math.nan if v is None else v) for k, v in e.items()})
    if not isinstance(e, Estimate) or math.isnan(e.value):
        return "n/a"
    return f"{e.value:.2f} [{e.low:.2f}, {e.high:.2f}]"


def hack_markdown(hacks: dict[str, Any]) -> str:
    """The hack table as Markdown."""
    runs = hacks["runs"]
    names = list(runs)
    first = runs[names[0]]
    lines = [
        f"## Hack probes ({hacks['mode']}, template `{hacks['template']}`)",
        "",
        f"{first['questions']} questions, each with a right and a wrong solution. Win rate: the"
        " probe scores at least as high as the right solution of its question (95% bootstrap"
        " over questions). Right solutions' mean score: "
        + ", ".join(f"{n} {_num(runs[n]['right_mean_score'])}" for n in names)
        + ".",
        "",
        "| family | probes | " + " | ".join(f"win rate, {n}" for n in names)
        + " | " + " | ".join(f"mean score, {n}" for n in names) + " | wrong solutions |",
        "|---|---|" + "---|" * (2 * len(names) + 1),
    ]  # fmt: skip
    for family in FAMILIES:
        rows = [runs[n]["families"][family] for n in names]
        lines.append(
            f"| {family} | {rows[0]['probes']} | "
            + " | ".join(_fmt(r["win_rate"]) for r in rows)
            + " | "
            + " | ".join(_fmt(r["mean_score"]) for r in rows)
            + f" | {_fmt(rows[0]['wrong_mean_score'])} |"
        )
    for n in names:
        fired = runs[n]["guards_fired"]
        shown = ", ".join(f"{k} {v}" for k, v in fired.items()) or "none"
        lines.append(f"\nGuards fired ({n}, guards: {', '.join(hacks['guards'][n]) or 'none'}):"
                     f" {shown}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, Estimate):
        return x.to_dict()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return x


def write_hacks(out: str | Path, hacks: dict[str, Any]) -> Path:
    """Write ``hacks.json``, ``HACKS.md`` and (with matplotlib) ``hacks.png``; the .md path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hacks.json").write_text(json.dumps(_jsonable(hacks), indent=2) + "\n")
    text = hack_markdown(hacks)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        text += "\n(no figure: pip install matplotlib)\n"
    else:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(hacks["runs"])
        for k, (name, run) in enumerate(hacks["runs"].items()):
            values = [run["families"][f]["win_rate"].value for f in FAMILIES]
            xs = [i + k * width for i in range(len(FAMILIES))]
            ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=name)
        ax.set_xticks([i + width / 2 for i in range(len(FAMILIES))], FAMILIES, rotation=35,
                      ha="right")  # fmt: skip
        ax.set(
            ylabel="win rate vs the right solution",
            ylim=(0, 1),
            title=f"Hack probes ({hacks['mode']}, {hacks['template']})",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "hacks.png", dpi=100)
        plt.close(fig)
        text += "\n![hack probes](hacks.png)\n"
    path = folder / "HACKS.md"
    path.write_text(text, encoding="utf-8")
    return path
