"""``python -m exprl_rewards.audit``: see :mod:`exprl_rewards.cli.audit`."""

from __future__ import annotations

import sys

from ..cli.audit import main

if __name__ == "__main__":
    sys.exit(main())
