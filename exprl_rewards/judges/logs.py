"""Where a local engine's own output goes: a log file instead of the user's terminal.

vLLM, torch and their C++ layers print start-up notices, warnings and progress bars
straight to the process's standard output and error, around the library's own progress
bar and summary. :func:`engine_output` sends file descriptors 1 and 2 to a log file for
the duration of a block (the engine's start-up, each batch it generates), so everything
printed there, by Python or by native code, lands in the file, and restores them after.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["engine_output"]

_lock = threading.RLock()  # file descriptors are per process: one redirection at a time


@contextlib.contextmanager
def engine_output(log: Path | None) -> Iterator[None]:
    """Send stdout and stderr (the file descriptors) to ``log`` inside the block.

    ``None`` leaves them alone. The file is appended to and its folder created.
    """
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with _lock, log.open("ab") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
