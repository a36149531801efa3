"""The score CLI from Python: :func:`score_file`, with every guarantee of the command line.

``score_file("in.jsonl", "out.jsonl", mode="outcome", base_url=[url], ray="local")``
runs exactly what ``python -m exprl_rewards.score in.jsonl -o out.jsonl --mode outcome
--base-url URL --ray`` runs (validation first, resumable output, whole groups, the
judge check, Ray when asked) and returns the run's summary. It builds no command line:
each keyword is checked against the option of that name (its type, its choices, a
flag's bool) and the run is :func:`~exprl_rewards.cli.score.score`, the core the CLI
wraps, so a failure raises the same typed error the CLI turns into an exit code.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["score_file"]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by keyword name (``--base-url`` -> ``base_url``)."""
    return {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "version", "output")
    }


def _value(name: str, action: argparse.Action, value: Any) -> Any:
    """``value`` as the option would have parsed it, or a :class:`ConfigError`."""
    flag = f"{name}= (--{name.replace('_', '-')})"
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ConfigError(f"score_file: {flag} is a flag: give True or False, not {value!r}")
        return value or action.default
    if value is True and action.const is not None:  # --ray alone: its const
        return action.const
    if isinstance(action, argparse._AppendAction):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_one(flag, action, item) for item in items]
    return _one(flag, action, value)


def _one(flag: str, action: argparse.Action, value: Any) -> Any:
    convert = action.type if callable(action.type) else None
    if convert is not None:
        try:
            value = convert(value if isinstance(value, str) else str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise ConfigError(f"score_file: {flag}: {e}") from None
    elif not isinstance(value, (str, Path)):
        raise ConfigError(f"score_file: {flag} takes text, not {value!r}")
    else:
        value = str(value)
    if action.choices is not None and value not in action.choices:
        known = ", ".join(map(str, action.choices))
        raise ConfigError(f"score_file: {flag} is {value!r}; choose one of {known}")
    return value


def score_file(input: str | Path, output: str | Path, **options: Any) -> dict[str, Any]:
    """Grade rollouts into ``output`` as the score CLI does; return its summary.

    Args:
        input: JSONL rollouts: a file (plain, compressed or Parquet), a folder of shards,
            or a URI such as ``s3://bucket/prefix`` (:mod:`exprl_rewards.io.sources`).
        output: the JSONL output (appended, resumable).
        **options: the CLI's options by their long names with ``_`` for ``-``, e.g.
            ``mode="process-prefix"``, ``base_url=["http://127.0.0.1:8000/v1"]``,
            ``model="judge"``, ``summary_json="s.json"``, ``ray="local"`` (or an
            address), ``ray_actors=4``; a flag takes a bool.

    Raises:
        ConfigError: an unknown option (with the nearest names) or a bad value.
        InputError: bad input rows (``.errors`` lists them), or input that changed.
        JudgeUnavailable: the judge failed (its check, or rows it never answered).
        ExpRLError: any other failure the CLI reports, with the same message.

    >>> score_file("in.jsonl", "out.jsonl", mdoe="outcome")
    Traceback (most recent call last):
    ...
    exprl_rewards.errors.ConfigError: score_file: unknown option 'mdoe'; did you mean mode, model?
    """
    from .score import score
    from .score_args import score_parser

    parser = score_parser()
    args = parser.parse_args([str(input), "-o", str(output)])
    known = _options(parser)
    for name, value in options.items():
        action = known.get(name)
        if action is None:
            near = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(known)}"
            raise ConfigError(f"score_file: unknown option {name!r}{hint}")
        if value is not None:
            setattr(args, action.dest, _value(name, action, value))
    return score(args)
