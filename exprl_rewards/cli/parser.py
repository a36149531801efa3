"""The argument parser every command uses: defaults in ``--help``, "did you mean".

- **Defaults shown**: every option with a default says it in ``--help``, whether or not
  its help text was written with one (:class:`DefaultsFormatter`).
- **Did you mean**: an unknown flag (``--concurency``) or a value outside an option's
  choices (``--mode outcom``) is answered with the closest names, as git and pip do.
- **Environment**: the judge options read ``EXPRL_JUDGE_BASE_URL``, ``EXPRL_JUDGE_MODEL``
  and ``EXPRL_JUDGE_API_KEY`` (:mod:`~exprl_rewards.cli.judge_args`); a flag wins.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
from typing import Any, NoReturn

__all__ = ["DefaultsFormatter", "ExpRLParser", "RawDefaultsFormatter", "suggestion"]

_QUIET = (argparse._HelpAction, argparse._VersionAction)


class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` with ``(default: X)`` after every option that has a default."""

    def _format_action(self, action: argparse.Action) -> str:
        if _shows_default(action) and "default" not in (action.help or "").lower():
            action = copy.copy(action)
            action.help = f"{action.help or ''} (default: %(default)s)".strip()
        return super()._format_action(action)


class RawDefaultsFormatter(argparse.RawDescriptionHelpFormatter, DefaultsFormatter):
    """:class:`DefaultsFormatter` that keeps the description's own line breaks."""


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return bool(
        action.option_strings
        and not isinstance(action, _QUIET)
        and action.help != argparse.SUPPRESS
        and default not in (None, argparse.SUPPRESS, False, [])
    )


def suggestion(word: str, known: list[str], cutoff: float = 0.6) -> str:
    """`` (did you mean X?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(word, known, n=2, cutoff=cutoff)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class ExpRLParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` with :class:`DefaultsFormatter` and close-match
    suggestions in its errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flags = sorted(self._option_string_actions)
            words = message.removeprefix("unrecognized arguments: ").split()
            hints = [suggestion(w.split("=")[0], flags, 0.75) if w.startswith("-") else ""
                     for w in words]  # fmt: skip
            message = "unrecognized arguments: " + " ".join(
                w + hint for w, hint in zip(words, hints, strict=True)
            )
        elif (match := _CHOICE.search(message)) is not None:
            known = re.findall(r"'([^']*)'", match.group(2))
            message += suggestion(match.group(1), known)
        super().error(message)
