"""What a run folder may be resumed with, checked before any model loads.

A run folder (``run.out``) holds ``config.json``, ``metrics.jsonl``, ``samples.jsonl`` and,
after the first save, ``checkpoint.pt``. :func:`check_run_folder` refuses what would mix
two runs in one folder:

- a folder that holds a run, without ``--resume``: a second run would append its steps
  1, 2, ... after the first one's;
- ``--resume`` with a changed config, except the keys in :data:`RESUMABLE` (how long to
  run, how often to save and log, the judge client's limits): a restored optimiser keeps
  training at its own learning rate whatever ``config.json`` says, so a changed ``lr``,
  seed, stage or model would be recorded but not used.

:func:`drop_rows_after` forgets a log's rows of steps the checkpoint does not hold (all
of them when there is no checkpoint yet), and tolerates the cut-off last row a killed
run leaves; a broken row elsewhere is an error naming its line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import TrainConfig

__all__ = ["LOGS", "RESUMABLE", "check_run_folder", "drop_rows_after"]

LOGS = ("metrics.jsonl", "samples.jsonl")

# Keys a resume may change: they do not change what the steps already taken computed.
RESUMABLE = frozenset({
    "run.steps", "run.save_every", "run.log_samples", "run.eval_samples", "run.threads_bind",
    "judge.concurrency", "judge.timeout", "judge.cache", "watch.stop_on_alarm",
})  # fmt: skip


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _rows(path: Path) -> list[str]:
    """The complete rows of a log; a cut-off last row (no newline, not JSON) is left out."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, with no newline after it
                continue
            raise ConfigError(
                f"{path}:{number}: not a JSON row, so the run folder is not this trainer's"
                " log as written; move it away, or choose another run.out"
            ) from None
        rows.append(line)
    return rows


def drop_rows_after(path: Path, step: int) -> None:
    """Keep a log's rows of steps up to ``step`` (atomically); a cut-off last row goes."""
    if not path.exists():
        return
    rows = _rows(path)
    kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if "".join(line + "\n" for line in kept) != path.read_text(encoding="utf-8"):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)


def check_run_folder(config: TrainConfig, *, resume: bool) -> None:
    """Refuse a run folder that a new or resumed run would mix with another (see above).

    Raises:
        ConfigError: naming the folder, what differs, and the way out.
    """
    out = config.run.out
    saved = out / "config.json"
    steps = len(_rows(out / "metrics.jsonl"))
    held = steps or (out / "checkpoint.pt").exists()
    if not resume:
        if held:
            raise ConfigError(
                f"{out} holds a run ({steps} metrics rows): pass --resume to continue it, or"
                " set run.out to a new folder; a new run would append its steps to the old"
            )
        return
    if not saved.exists():
        return
    try:
        old = _flat(json.loads(saved.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{saved}: cannot read the run's config: {e}") from e
    new = _flat(json.loads(config.model_dump_json()))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    refused = [k for k in changed if k not in RESUMABLE and k != "preset"]
    if refused:
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused)
        raise ConfigError(
            f"{out} was run with another config ({diff}). A resume continues that run"
            f" (its optimiser keeps its own settings), so only {', '.join(sorted(RESUMABLE))}"
            " may change: restore the others, or start a new run in another run.out"
        )
