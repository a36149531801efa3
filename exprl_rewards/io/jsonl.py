"""Read rollouts from JSONL, with errors that name the file, the line and the field.

The input is a file, standard input, a folder of shards or a remote store, JSONL
(plain or compressed) or Parquet (:mod:`exprl_rewards.io.sources`); a Parquet row is
checked as the JSON object it will be written as, its row number standing for the line.

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

import difflib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import InputError
from ..text.rollout import Rollout
from .sources import is_uri, records

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
    """A valid row: its line, the original JSON object, the rollout read from it, its file."""

    line: int
    data: dict[str, Any]
    rollout: Rollout
    path: str = ""  # the file it came from (inputs may be folders of files)


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


def _not_json(value: Any, path: str = "") -> str | None:
    """The dotted path of the first value JSON cannot hold (a Parquet row's bytes,
    timestamps, NaN...), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(row)"
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if not isinstance(k, str):
                return here
            if (bad := _not_json(v, here)) is not None:
                return bad
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (bad := _not_json(v, f"{path}.{i}" if path else str(i))) is not None:
                return bad
        return None
    return path or "(row)"


_TOO_DEEP = "nested too deep (arrays or objects hundreds of levels down); flatten the row"


def _parse(
    file: str, number: int, raw: bytes | dict[str, Any]
) -> tuple[dict[str, Any], str] | RowError:
    """A record as a JSON object and its text, or why it is not one."""
    if isinstance(raw, dict):  # a Parquet row
        text = json.dumps(raw, ensure_ascii=False, default=repr)
        if (bad := _not_json(raw)) is not None:
            value = get_path(raw, bad) if bad != "(row)" else raw
            message = f"a {type(value).__name__} value, which JSON cannot hold; cast the column"
            return RowError(file, number, bad, message, text)
        data = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", errors="backslashreplace")
            message = f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            return RowError(file, number, None, message, text)
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            message = f"not valid JSON ({e.msg} at column {e.colno})"
            return RowError(file, number, None, message, text)
        except ValueError as e:
            return RowError(file, number, None, f"not valid JSON: {e}", text)
        except RecursionError:
            return RowError(file, number, None, _TOO_DEEP, text[:2000])
        if not isinstance(data, dict):
            message = f"a row must be a JSON object, got {type(data).__name__}"
            return RowError(file, number, None, message, text)
    try:
        bad = find_bad_string(data)
    except RecursionError:
        return RowError(file, number, None, _TOO_DEEP, text[:2000])
    if bad is not None:
        message = "has a lone surrogate (a \\ud800-\\udfff escape), which is not text"
        return RowError(file, number, bad, message, text)
    return data, text


# What other layouts call each field (TRL, verl, OpenRLHF, Hugging Face datasets).
_ALIASES = {
    "question": ("prompt", "problem", "query", "input", "instruction"),
    "reference": ("solution", "answer", "ground_truth", "label", "target", "gold"),
    "response": ("completion", "output", "generation", "generated_text", "model_output"),
}


def _missing(name: str, source: str, data: Mapping[str, Any]) -> str:
    """'missing', with the row's keys and the mapping flag that would find the field.

    >>> _missing("reference", "reference", {"solution": "4"})
    "missing (the row's keys: solution); pass --reference-field solution if it holds the reference"
    """
    keys = sorted(map(str, data))
    shown = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    message = f"missing (the row's keys: {shown or 'none'})"
    close = [k for k in _ALIASES.get(name, ()) if k in data]
    close = close or difflib.get_close_matches(source, keys, n=1, cutoff=0.6)
    if close:
        message += f"; pass --{name.replace('_', '-')}-field {close[0]} if it holds the {name}"
    return message


def _rollout(
    data: dict[str, Any],
    fields: FieldMap,
    default_id: str,
    error: Callable[[str | None, str], RowError],
    metadata: Mapping[str, str],
) -> Rollout | RowError:
    """The rollout in a row, checked; ``error(field, message)`` builds the RowError."""
    values: dict[str, Any] = {}
    for name, source in vars(fields).items():
        value = get_path(data, source)
        if value is not MISSING and value is not None:
            values[name] = value
    values.setdefault("id", default_id)
    values.setdefault("group_id", values.get("question", ""))
    try:
        checked = _Fields(**values)
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0])
        source = getattr(fields, name, name)
        message = _missing(name, source, data) if first["type"] == "missing" else first["msg"]
        return error(source, message)
    offsets = checked.token_offsets
    if offsets is not None and any(len(pair) != 2 for pair in offsets):
        return error(fields.token_offsets, "each offset must be a [start, end] pair")
    try:
        return Rollout(
            id=str(checked.id),
            group_id=str(checked.group_id),
            question=checked.question,
            reference=checked.reference,
            response=checked.response,
            token_ids=tuple(checked.token_ids) if checked.token_ids is not None else None,
            token_offsets=tuple((a, b) for a, b in offsets) if offsets is not None else None,
            truncated=checked.truncated,
            metadata={
                key: value
                for key, path in metadata.items()
                if (value := get_path(data, path)) is not MISSING
            },
        )
    except InputError as e:
        return error(fields.token_offsets if "token_offsets" in str(e) else None, str(e))


def _shard_name(file: str, path: str) -> str | None:
    """``file``'s path inside the input folder ``path``, however ``path`` is spelled
    (``sh``, ``./sh/``, ``/abs/sh``), so default ids do not change with the spelling;
    None when ``path`` is the file itself."""
    if is_uri(path):
        prefix = path.split("?")[0].rstrip("/") + "/"
        return file[len(prefix) :] if file.startswith(prefix) else None
    if file == path or path == "-" or not os.path.isdir(path):
        return None
    return Path(os.path.abspath(file)).relative_to(os.path.abspath(path)).as_posix()


def read_rollouts(
    path: str,
    fields: FieldMap | None = None,
    *,
    reserved: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[list[SourceRow], list[RowError]]:
    """Read and validate every row of a JSONL file, a folder or a remote store.

    Args:
        path: a file, ``"-"`` (standard input), a folder or a URI
            (:mod:`exprl_rewards.io.sources`).
        fields: where each rollout field is.
        reserved: a top-level key that rows must not have (where results will go).
        metadata: rollout metadata to fill: key -> dotted path in the row (missing
            paths are left out).

    Returns:
        ``(rows, errors)``: the valid rows in file order, and one error per bad row.
        Blank lines are skipped. A row whose id was seen before is an error. A row
        with no id gets its line number (``"L17"``; in a folder, ``"a.jsonl:L17"``).
    """
    fields = fields or FieldMap()
    rows: list[SourceRow] = []
    errors: list[RowError] = []
    seen: dict[str, tuple[str, int]] = {}
    for file, number, raw in records(path):
        if isinstance(raw, bytes) and not raw.strip():
            continue
        parsed = _parse(file, number, raw)
        if isinstance(parsed, RowError):
            errors.append(parsed)
            continue
        data, text = parsed

        def error(field: str | None, message: str) -> RowError:
            return RowError(file, number, field, message, text)  # noqa: B023 (used at once)

        if reserved is not None and reserved in data:
            errors.append(error(reserved, "results are written to this field; pass"
                                " --output-field with another name"))  # fmt: skip
            continue
        shard = _shard_name(file, path)
        default_id = f"{shard}:L{number}" if shard is not None else f"L{number}"
        rollout = _rollout(data, fields, default_id, error, metadata or {})
        if isinstance(rollout, RowError):
            errors.append(rollout)
            continue
        if rollout.id in seen:
            first_file, first = seen[rollout.id]
            where = f"line {first}" if first_file == file else f"{first_file}:{first}"
            errors.append(error(fields.id, f"duplicate id {rollout.id!r} (first on {where})"))
            continue
        seen[rollout.id] = (file, number)
        rows.append(SourceRow(number, data, rollout, file))
    _refuse_json_arrays(errors)
    return rows, errors


def _refuse_json_arrays(errors: Sequence[RowError]) -> None:
    """A file whose every line failed, and whose first line opens a JSON array, is JSON,
    not JSON Lines: one error that says so, not one per line.

    Raises:
        InputError: naming the file and how to convert it.
    """
    failed: dict[str, list[RowError]] = {}
    for e in errors:
        failed.setdefault(e.path, []).append(e)
    for file, bad in failed.items():
        first = min(bad, key=lambda e: e.line)
        if first.text.strip().startswith("[") and all(e.field is None for e in bad):
            whole = Path(file).read_text(encoding="utf-8", errors="replace") if Path(
                file).is_file() else ""  # fmt: skip
            try:
                array = json.loads(whole)
            except ValueError:
                continue
            if isinstance(array, list):
                raise InputError(
                    f"{file}: a JSON array of {len(array)} items, not JSON Lines (one object"
                    f" per line); convert it first: jq -c '.[]' {file} > rows.jsonl"
                )
