"""``python -m exprl_rewards.local_judge``: see :mod:`exprl_rewards.cli.local_judge`."""

from __future__ import annotations

import sys

from .cli.local_judge import main

if __name__ == "__main__":
    sys.exit(main())
