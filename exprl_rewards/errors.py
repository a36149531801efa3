"""The exceptions exprl-rewards raises.

Every error the library raises on purpose derives from one base class, so callers can
catch them all with ``except ExpRLError``::

    ExpRLError
    ├── ConfigError          a bad option: unknown preset or estimator, invalid range
    ├── InputError           bad data: a rollout, a score array, token offsets
    │   └── AlignmentError   token offsets that do not fit the text or its segments
    ├── CacheError           a judge cache file that cannot be opened or read
    ├── OutputError          an output path that is not this tool's to write
    ├── JudgeUnavailable     the judge cannot be reached, does not serve the model, or
    │                        answers nothing a score can be read from (a run stops)
    └── MissingExtraError    an optional dependency is not installed (names the extra)

Messages say what was wrong and how to fix it. The judge and I/O layers add their own
subclasses in later modules; they stay under this tree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AlignmentError",
    "CacheError",
    "ConfigError",
    "ExpRLError",
    "InputError",
    "JudgeUnavailable",
    "MissingExtraError",
    "OutputError",
    "unknown_name",
]


class ExpRLError(Exception):
    """Base class of every error raised by exprl-rewards."""


class ConfigError(ExpRLError, ValueError):
    """An option or configuration value is invalid."""


class InputError(ExpRLError, ValueError):
    """Input data (rollouts, scores, offsets) is malformed."""


class AlignmentError(InputError):
    """Token character offsets are inconsistent with the text or its segments."""


class CacheError(ExpRLError):
    """The judge cache file cannot be opened or read (corrupt, not SQLite, a folder)."""


class OutputError(ExpRLError):
    """An output path is not this tool's own output, or is in use by another run."""


class JudgeUnavailable(ExpRLError):
    """The judge cannot grade: unreachable, a model it does not serve, a redirect, an
    answer with no score in it, or too many requests failing on the backend mid-run.

    A run that meets it stops with a non-zero exit; it is never written as a result."""


class MissingExtraError(ExpRLError, ImportError):
    """An optional dependency is missing.

    Args:
        package: the module that failed to import, e.g. ``"vllm"``.
        extra: the extra of ``exprl-rewards`` that installs it, e.g. ``"cpu"``.
    """

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed; install it with `pip install 'exprl-rewards[{extra}]'`"
        )
        self.package = package
        self.extra = extra


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name that is not one of ``known``: the closest ones, then all.

    >>> str(unknown_name("slicer", "newlin", ["exprl", "newline"]))
    "unknown slicer 'newlin'; did you mean 'newline'? known: exprl, newline"
    """
    names = list(known)
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    hint = f" did you mean {' or '.join(map(repr, close))}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r};{hint} known: {', '.join(names)}")
