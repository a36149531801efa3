"""Read rollouts from JSONL, with errors that name the file, the line and the field.

A row is any JSON object; :class:`FieldMap` says where each rollout field lives, as a
dotted path (``extra_info.solution`` for verl-style rows, ``prompt.0.content`` for a
list). The native layout is::

    {"id": "r1", "group_id": "q1", "question": "...", "reference": "...",
     "response": "...", "token_offsets": [[0, 3], ...], "truncated": false}

``id`` defaults to the line number (``"L17"``) when a row has none, ``group_id`` to the
question text (rollouts of one question form a group); the other fields are required.
Validation (pydantic, strict types) runs over the whole file before any judge call, and
every bad row is reported, not just the first. Duplicate ids are errors too, and so is
anything a later stage could not write or send: bytes that are not UTF-8 (reported on
their own line), strings with lone surrogates (``"\\ud800"`` escapes), ``NaN`` and
``Infinity`` (not JSON), and a row that already has the field results are written to.
Lines end at ``\\n`` only: a lone carriage return inside a row does not split it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError
from .rollout import Rollout

__all__ = ["FieldMap", "RowError", "SourceRow", "find_bad_string", "get_path", "read_rollouts"]


@dataclass(frozen=True)
class FieldMap:
    """Where each rollout field is found in a row (dotted paths)."""

    id: str = "id"
    group_id: str = "group_id"
    question: str = "question"
    reference: str = "reference"
    response: str = "response"
    token_ids: str = "token_ids"
    token_offsets: str = "token_offsets"
    truncated: str = "truncated"


@dataclass(frozen=True)
class RowError:
    """A row that could not be read: where, which field, and why."""

    path: str
    line: int
    field: str | None
    message: str
    text: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return (
            f"{where}: field {self.field!r}: {self.message}"
            if self.field
            else f"{where}: {self.message}"
        )


@dataclass(frozen=True)
class SourceRow:
    """A valid row: its line, the original JSON object, and the rollout read from it."""

    line: int
    data: dict[str, Any]
    rollout: Rollout


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | int
    group_id: str | int
    question: str
    reference: str
    response: str
    token_ids: list[int] | None = None
    token_offsets: list[list[int]] | None = None  # [start, end] pairs: JSON has no tuples
    truncated: bool = False


MISSING = object()


def get_path(data: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; a missing step gives ``MISSING``.

    >>> get_path({"extra_info": {"solution": "42"}}, "extra_info.solution")
    '42'
    >>> get_path({"prompt": [{"content": "hi"}]}, "prompt.0.content")
    'hi'
    """
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif (
            isinstance(data, list)
            and part.lstrip("-").isdigit()
            and -len(data) <= int(part) < len(data)
        ):
            data = data[int(part)]
        else:
            return MISSING
    return data


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Numbered lines as bytes, split at ``\\n`` only (``splitlines`` would split at CR)."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark
    yield from enumerate(data.split(b"\n"), start=1)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write null or a string")


def find_bad_string(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) that is not valid Unicode.

    >>> find_bad_string({"a": ["ok", "\\ud800"]})
    'a.1'
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(row)"
    elif isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if (bad := find_bad_string(k, here) or find_bad_string(v, here)) is not None:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (bad := find_bad_string(v, f"{path}.{i}" if path else str(i))) is not None:
                return bad
    return None


def read_rollouts(
    path: str, fields: FieldMap | None = None, *, reserved: str | None = None
) -> tuple[list[SourceRow], list[RowError]]:
    """Read and validate every row of a JSONL file (``"-"``: standard input).

    Args:
        path: the file, or ``"-"``.
        fields: where each rollout field is.
        reserved: a top-level key that rows must not have (where results will go).

    Returns:
        ``(rows, errors)``: the valid rows in file order, and one error per bad row.
        Blank lines are skipped. A row whose id was seen before is an error.
    """
    fields = fields or FieldMap()
    rows: list[SourceRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", errors="backslashreplace")
            message = f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            errors.append(RowError(path, number, None, message, text))
            continue
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            errors.append(
                RowError(path, number, None, f"not valid JSON ({e.msg} at column {e.colno})", text)
            )
            continue
        except ValueError as e:
            errors.append(RowError(path, number, None, f"not valid JSON: {e}", text))
            continue
        if not isinstance(data, dict):
            errors.append(
                RowError(
                    path,
                    number,
                    None,
                    f"a row must be a JSON object, got {type(data).__name__}",
                    text,
                )
            )
            continue
        if (bad := find_bad_string(data)) is not None:
            message = "has a lone surrogate (a \\ud800-\\udfff escape), which is not text"
            errors.append(RowError(path, number, bad, message, text))
            continue
        if reserved is not None and reserved in data:
            message = "results are written to this field; pass --output-field with another name"
            errors.append(RowError(path, number, reserved, message, text))
            continue
        values: dict[str, Any] = {}
        for name, source in vars(fields).items():
            value = get_path(data, source)
            if value is not MISSING and value is not None:
                values[name] = value
        values.setdefault("id", f"L{number}")
        values.setdefault("group_id", values.get("question", ""))
        try:
            checked = _Fields(**values)
        except ValidationError as e:
            first = e.errors()[0]
            name = str(first["loc"][0])
            source = getattr(fields, name, name)
            message = "missing" if first["type"] == "missing" else first["msg"]
            errors.append(RowError(path, number, source, message, text))
            continue
        offsets = checked.token_offsets
        if offsets is not None and any(len(pair) != 2 for pair in offsets):
            errors.append(
                RowError(
                    path,
                    number,
                    fields.token_offsets,
                    "each offset must be a [start, end] pair",
                    text,
                )
            )
            continue
        rollout_id = str(checked.id)
        if rollout_id in seen:
            errors.append(
                RowError(
                    path,
                    number,
                    fields.id,
                    f"duplicate id {rollout_id!r} (first on line {seen[rollout_id]})",
                    text,
                )
            )
            continue
        seen[rollout_id] = number
        try:
            rollout = Rollout(
                id=rollout_id,
                group_id=str(checked.group_id),
                question=checked.question,
                reference=checked.reference,
                response=checked.response,
                token_ids=tuple(checked.token_ids) if checked.token_ids is not None else None,
                token_offsets=tuple((a, b) for a, b in offsets) if offsets is not None else None,
                truncated=checked.truncated,
            )
        except InputError as e:
            field = fields.token_offsets if "token_offsets" in str(e) else None
            errors.append(RowError(path, number, field, str(e), text))
            continue
        rows.append(SourceRow(number, data, rollout))
    return rows, errors
