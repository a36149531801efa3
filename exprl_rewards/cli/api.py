"""The score CLI from Python: :func:`score_file`, with every guarantee of the command line.

``score_file("in.jsonl", "out.jsonl", mode="outcome", base_url=[url], ray="local")``
runs exactly what ``python -m exprl_rewards.score in.jsonl -o out.jsonl --mode outcome
--base-url URL --ray`` runs (validation first, resumable output, whole groups, Ray when
asked) and returns the run's summary. Keyword names are the CLI's long options with
``_`` for ``-``: ``True`` passes a flag, a list repeats its option, None leaves it out.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ExpRLError

__all__ = ["score_file"]


def _argv(options: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def score_file(input: str | Path, output: str | Path, **options: Any) -> dict[str, Any]:
    """Grade rollouts into ``output`` as the score CLI does; return its summary.

    Args:
        input: JSONL rollouts: a file (plain, compressed or Parquet), a folder of shards,
            or a URI such as ``s3://bucket/prefix`` (:mod:`exprl_rewards.sources`).
        output: the JSONL output (appended, resumable).
        **options: the CLI's options, e.g. ``mode="process-prefix"``,
            ``base_url=["http://127.0.0.1:8000/v1"]``, ``model="judge"``,
            ``ray="local"`` (or an address), ``ray_actors=4``.

    Raises:
        ExpRLError: the run failed (bad input rows, a bad option...); the message holds
            what the CLI printed.

    >>> _argv({"mode": "outcome", "base_url": ["u1", "u2"], "ray": True, "cache": None})
    ['--mode', 'outcome', '--base-url', 'u1', '--base-url', 'u2', '--ray']
    """
    from .score import main

    with tempfile.TemporaryDirectory() as tmp:
        given = options.pop("summary_json", None)  # written there too, with the CLI's checks
        summary = Path(given) if given is not None else Path(tmp) / "summary.json"
        argv = [str(input), "-o", str(output), *_argv(options), "--summary-json", str(summary)]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as e:  # argparse rejects an option: its last line says which
            lines = err.getvalue().strip().splitlines() or ["?"]
            message = lines[-1].split(": error: ", 1)[-1]
            raise ExpRLError(f"score_file: bad option: {message}") from e
        if code != 0:
            raise ExpRLError(f"score_file failed (exit {code}): {err.getvalue().strip()}")
        result: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
        return result
