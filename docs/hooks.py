"""MkDocs hook: ``<!-- cli-help: MODULE -->`` becomes that command's live ``--help``.

The CLI reference is then always the commands' own text, never a copy that drifts.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from typing import Any

_MARK = re.compile(r"<!-- cli-help: ([\w.]+) -->")


def _help(module: str) -> str:
    main = importlib.import_module(f"exprl_rewards.{module}").main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--help"])
    return out.getvalue()


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _MARK.sub(lambda m: f"```text\n{_help(m.group(1))}```", markdown)
