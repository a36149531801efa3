"""The score command's output file: ours to append to, or refused before it is touched.

``-o FILE`` is appended to and resumed by rollout id, so it must be this tool's own
output, written with the same settings, and written by one run at a time. Before any
judge call and before any byte of the file changes, :func:`open_output`:

- refuses a path that is the input file itself, or inside the input folder;
- creates missing parent folders;
- takes an exclusive lock on the file (``flock``), so a second run writing the same
  output stops at once instead of writing every row twice;
- reads every complete line: each must be a row this tool wrote (a JSON object whose
  output field holds an ``id`` and the run's ``settings``), and its settings must equal
  this run's (mode, template, judge, slicer, calibration...): resuming with other
  settings would mix two kinds of score in one file;
- only then cuts a last line without a newline, the row a killed run was writing, and
  only when complete rows of ours come before it.

Anything else (a JSON config, a CSV, another tool's JSONL, an older run) raises
:class:`~exprl_rewards.errors.OutputError` naming the file, the line and the way out.
A path that is not a regular file (``-``, ``/dev/stdout``, a pipe) is a stream: written,
never read back, resumed or locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import OutputError

__all__ = ["Output", "check_output", "check_side_files", "open_output", "settings_diff"]

# What makes an existing side file ours: the keys our summary and our bad-row lines hold.
_SUMMARY_KEYS = {"rows", "graded", "already_done", "scored", "unscored"}
_ERROR_KEYS = {"path", "line", "field", "error", "row"}


@dataclass
class Output:
    """An open output: where rows go, and the ids already written there."""

    stream: TextIO
    done: set[str] = field(default_factory=set)
    path: Path | None = None  # None for a stream
    digests: dict[str, str] = field(default_factory=dict)  # id -> the input it graded
    owned: bool = False  # a stream this run opened (a pipe, a device): closed at the end

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append whole rows in one write, flushed (strict JSON: no NaN)."""
        if rows:
            self.stream.write("".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
                                      for r in rows))  # fmt: skip
            self.stream.flush()

    def rewind(self, ids: set[str], name: str) -> bool:
        """Remove the rows ``ids`` when they are the file's last rows (the part of a group
        that a killed run wrote), so their group is graded and written whole again;
        False, changing nothing, when they are not all at the end.

        A group's advantages depend on every score in it: keeping its written rows and
        grading the rest anew (without a cache, or a judge that samples) would give the
        new rows advantages that do not match the old rows' scores.
        """
        if not ids:
            return True
        if self.path is None:
            return False
        self.stream.flush()
        data = self.path.read_bytes()
        end, found = len(data), set[str]()
        while found != ids and end > 0:
            start = data.rfind(b"\n", 0, end - 1) + 1
            rid = str(json.loads(data[start:end])[name]["id"])
            if rid not in ids:
                return False
            found.add(rid)
            end = start
        if found != ids:
            return False
        os.truncate(self.path, end)
        self.stream.seek(0, os.SEEK_END)
        self.done -= ids
        for rid in ids:
            self.digests.pop(rid, None)
        return True

    def close(self) -> None:
        if self.path is not None or self.owned:
            self.stream.close()  # also releases the lock
        else:
            self.stream.flush()


def settings_diff(old: Any, new: dict[str, Any]) -> list[str]:
    """The settings that differ, as ``key: old -> new`` lines."""
    if not isinstance(old, dict):
        return [f"settings: {old!r} -> (this run's)"]
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _is_stream(path: str) -> bool:
    if path == "-":
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _same_file(a: str, b: str) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def _inside(path: str, folder: str) -> bool:
    with contextlib.suppress(OSError):
        return os.path.isdir(folder) and Path(path).resolve().is_relative_to(Path(folder).resolve())
    return False


def _lock(handle: TextIO, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputError(
            f"{path} is being written by another run (it holds the file's lock); wait for it"
            " to finish, or write to another -o"
        ) from None


def _check_rows(
    path: Path, data: bytes, name: str, settings: dict[str, Any] | None
) -> dict[str, str | None]:
    """The ids of the complete rows in ``data`` and the input digest each graded, all of
    which must be ours and alike (with ``settings``, when given)."""
    done: dict[str, str | None] = {}
    not_ours = (
        f"it is not this tool's output, so it is left as it is: choose another -o (the"
        f" file must be empty, missing, or rows written by `exprl_rewards.score` with"
        f" --output-field {name})"
    )
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            record = row[name]
            rid, old = str(record["id"]), record["settings"]
        except (ValueError, TypeError, KeyError, IndexError):
            raise OutputError(f"{path}:{number}: {not_ours}") from None
        if settings is not None and old != settings:
            changes = "; ".join(settings_diff(old, settings))
            raise OutputError(
                f"{path}:{number}: written with other settings ({changes}). Resuming would mix"
                " two kinds of score in one file: write to a new -o, or rerun with the old"
                " settings"
            )
        digest = record.get("input")
        done[rid] = digest if isinstance(digest, str) else None
    return done


def _side_is_ours(flag: str, data: bytes) -> bool:
    try:
        if flag == "--summary-json":
            summary = json.loads(data)
            return isinstance(summary, dict) and summary.keys() >= _SUMMARY_KEYS
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        return all(isinstance(r, dict) and r.keys() >= _ERROR_KEYS for r in rows)
    except ValueError:
        return False


def check_side_files(
    files: dict[str, str | None], *, input_path: str | None, output_path: str
) -> None:
    """Refuse, before anything is written or judged, a side file (``--summary-json``,
    ``--errors-file``) that would overwrite what is not its own.

    Each must not be the input, inside the input folder, the output, another side
    file, or a folder, and a file already there must be one this tool wrote in that
    role (a summary, or bad-row lines); anything else is left untouched.

    Raises:
        OutputError: naming the flag, the path and the way out.
    """
    seen: dict[str, str] = {}
    for flag, path in files.items():
        if not path:
            continue
        where = f"{flag} {path}"
        if os.path.isdir(path):
            raise OutputError(f"{where} is a folder; give a file path, e.g. {path}/{flag[2:]}")
        if _is_stream(path):  # a pipe or a device: written, never read
            continue
        for other, role in ((input_path, "the input"), (output_path, "the output (-o)"),
                            *((p, f) for f, p in seen.items())):  # fmt: skip
            if other not in (None, "-") and (_same_file(path, other) or path == other):
                raise OutputError(f"{where} is {role}; write it to another path")
        if input_path not in (None, "-") and _inside(path, input_path):
            raise OutputError(
                f"{where} is inside the input folder {input_path}, so a rerun would read it"
                " as input; write it outside"
            )
        with contextlib.suppress(FileNotFoundError):
            data = Path(path).read_bytes()
            if data.strip() and not _side_is_ours(flag, data):
                raise OutputError(
                    f"{where} exists and is not a file this tool wrote for {flag}, so it is"
                    " left as it is; choose another path, or remove it yourself"
                )
        seen[flag] = path


def _read_ours(
    target: Path, data: bytes, name: str, settings: dict[str, Any] | None
) -> tuple[dict[str, str | None], int]:
    """The ids written, and where the complete rows end (a cut-off row of ours may follow)."""
    end = data.rfind(b"\n") + 1
    done = _check_rows(target, data[:end], name, settings)
    if end < len(data) and (not done or not data[end:].lstrip().startswith(b"{")):
        line = data.count(b"\n") + 1
        raise OutputError(
            f"{target}:{line}: a last line with no newline that is not the cut-off"
            " row of an earlier run of ours: this is not this tool's output, so it"
            " is left as it is; choose another -o"
        )
    return done, end


def _check_where(path: str, input_path: str | None) -> None:
    if input_path not in (None, "-") and _same_file(path, input_path):
        raise OutputError(f"{path} is the input file; write the output to another path")
    if input_path not in (None, "-") and _inside(path, input_path):
        raise OutputError(
            f"{path} is inside the input folder {input_path}, so a rerun would read it as"
            " input; write the output outside it"
        )


def check_output(path: str, *, name: str, input_path: str | None = None) -> None:
    """Refuse an output that :func:`open_output` would refuse whatever the settings, and
    change nothing: a run calls it before it calls the judge, which the settings name.

    Raises:
        OutputError: as :func:`open_output`.
    """
    if _is_stream(path):
        return
    _check_where(path, input_path)
    if os.path.isdir(path):
        raise OutputError(f"-o {path} is a folder; give a file path")
    with contextlib.suppress(FileNotFoundError):
        _read_ours(Path(path), Path(path).read_bytes(), name, None)


def open_output(
    path: str, *, name: str, settings: dict[str, Any], input_path: str | None = None
) -> Output:
    """Open ``path`` for the rows of a run with ``settings`` (see the module docs).

    Args:
        path: the ``-o`` argument (``"-"``: standard output).
        name: the output field (``--output-field``) that holds each row's results.
        settings: this run's settings, stored in every row and compared on resume.
        input_path: the input file or folder, which never holds the output.

    Raises:
        OutputError: the file is not ours, is locked by another run, holds rows of
            other settings, or is the input.
    """
    if _is_stream(path):
        stream = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")  # noqa: SIM115
        return Output(stream, owned=path != "-")
    target = Path(path)
    _check_where(path, input_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = target.open("a", encoding="utf-8")  # creates it; changes nothing that exists
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        _lock(handle, target)
        data = target.read_bytes()
        done, end = _read_ours(target, data, name, settings)
        if end < len(data):
            os.truncate(target, end)  # the row a killed run was writing
    except BaseException:
        handle.close()
        raise
    digests = {rid: digest for rid, digest in done.items() if digest is not None}
    return Output(handle, set(done), target, digests)
