"""``python -m exprl_rewards.score``: see :mod:`exprl_rewards.cli.score`."""

from __future__ import annotations

import sys

from .cli.score import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
