"""An on-disk cache of judge outputs, so a re-run or a crash-resume never pays twice.

One SQLite file (stdlib ``sqlite3``) maps a request's cache key (a hash of backend,
model, template hash, rendered messages, prefill and sampling parameters; see
:meth:`JudgeRequest.cache_key`) to the backend's *raw* output. Parsing runs again on
every read, so a better parser improves cached judgements too.

Only answers are cached: a request that failed (timeouts, 5xx after retries) is not,
and is tried again next time. An answer is stored only after it has been parsed, and
only when it is well formed (:meth:`RawOutput.problem`); one the parser rejects *is*
cached (with greedy decoding the judge would say the same again). A stored entry that
cannot be read back is a miss, never a crash.

A file that is not a readable SQLite database raises :class:`CacheError` on opening,
naming the file and the ways out. If the database fails later, mid-run, the cache
logs one warning and turns itself off, and the run goes on without it.

Safe under concurrent writers: WAL journaling, a busy timeout so that writers from
several processes wait for each other instead of failing, and a lock around the one
connection shared by threads of a process. Writes are ``INSERT OR REPLACE`` of
identical values, so a race between two writers of the same key is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CacheError
from .verdict import RawOutput

_log = logging.getLogger(__name__)

__all__ = ["JudgeCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class JudgeCache:
    """A SQLite file of raw judge outputs, keyed by request hash.

    Args:
        path: the database file; created with its parent folders if missing.
        timeout: seconds a writer waits for another process's lock.

    >>> import tempfile, os
    >>> cache = JudgeCache(os.path.join(tempfile.mkdtemp(), "judge.sqlite"))
    >>> cache.put_many([("k", "m", RawOutput("Score: 4"))])
    >>> cache.get_many(["k", "other"])["k"].text
    'Score: 4'
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._open()

    def _open(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disabled: str | None = None  # why the cache turned itself off mid-run
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
            )
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.execute("SELECT key, output FROM judgements LIMIT 1").fetchall()
        except (sqlite3.Error, OSError) as e:
            raise CacheError(
                f"cannot use the judge cache {self.path}: {e}. Run with --no-cache, point"
                " --cache at a new file, or move this one away (it is only a cache)"
            ) from e

    def _fail(self, e: sqlite3.Error) -> None:
        if self.disabled is None:
            self.disabled = f"{type(e).__name__}: {e}"
            _log.warning(
                "judge cache %s failed (%s); going on without it", self.path, self.disabled
            )

    def __getstate__(self) -> dict[str, Any]:
        # A pickled cache (a reward function sent to a worker process) reopens the file.
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]
        self._open()

    def get_many(self, keys: Iterable[str]) -> dict[str, RawOutput]:
        """Return the cached outputs among ``keys`` (missing keys are left out)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, RawOutput] = {}
        if self.disabled is not None:
            return found
        try:
            with self._lock:
                for start in range(0, len(keys), 500):  # SQLite caps bound parameters
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT key, output FROM judgements WHERE key IN ({marks})", chunk
                    ).fetchall()
                    for k, v in rows:
                        # An unreadable entry is a miss, replaced when judged again.
                        with contextlib.suppress(ValueError):
                            found[k] = RawOutput.from_json(v)
        except sqlite3.Error as e:
            self._fail(e)
            return {}
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, str, RawOutput]]) -> None:
        """Store ``(key, model, output)`` triples in one transaction."""
        rows = [(k, m, o.to_json()) for k, m, o in items]
        if not rows or self.disabled is not None:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO judgements (key, model, output) VALUES (?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._fail(e)

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM judgements").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
