"""Labelled rollouts for audits: the public sets in a checkout's ``data/``, or any JSONL.

Each adapter returns :class:`Labelled` items: a :class:`~exprl_rewards.text.rollout.Rollout`
(question, human reference, response) and its label, either an outcome (1: the final
answer is right) or, for step-labelled traces, the index of the first wrong step (-1:
none). Step-labelled traces are joined with blank lines, so the ``blank-line`` slicer
gives back exactly the labelled steps (a blank line inside a step, as in some PRMBench
steps, becomes a single line break); an adapter checks this and says which trace
breaks it.

==========================  ===========  =========================================
name                        labels       reference the judge sees
==========================  ===========  =========================================
``processbench-gsm8k``      first error  GSM8K's human solution (all 400 matched)
``processbench-math``       first error  MATH-500's solution (the matched subset)
``gsm8k-solutions``         outcome      GSM8K's human solution
``qwen25-math``             outcome      MATH's human solution (``gt_cot``)
``bigbench-mistake``        first error  the target answer only (none is given)
``prmbench``                first error  the unmodified PRM800K solution
``jsonl:PATH``              outcome      ``--reference-field``; ``--label-field``
``jsonl:PATH`` + steps      first error  ``--reference-field``; see below
==========================  ===========  =========================================

**Your own step-labelled traces** (``jsonl:PATH`` with ``steps_field``, the CLI's
``--steps-field``): each row has its steps as a list of strings, the question and the
reference (``--question-field``, ``--reference-field``), and one of:

- ``first_error_field`` (``--first-error-field``): the index of the first wrong step,
  ``-1`` or null when every step is right (ProcessBench's ``label``);
- ``step_labels_field`` (``--step-labels-field``): one label per step, on the scale
  ``step_labels_scale`` (``--step-labels-scale``): ``"ternary"``, PRM800K's ratings (-1
  bad, 0 neutral, 1 good: the first -1 is the first error); ``"binary"`` (1/true right,
  0/false wrong, as in Math-Shepherd: the first 0 is the first error); or ``"auto"``
  (default): ternary when any label is -1, else binary. A PRM800K trace without a -1
  but with a neutral 0 reads as wrong under ``auto``: say ``ternary`` for such data.

The outcome label is 1 exactly when no step is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.jsonl import MISSING, FieldMap, get_path, read_rollouts
from ..text.rollout import Rollout
from ..text.slicers import get_slicer

__all__ = ["DATASETS", "Labelled", "default_data_dir", "load_dataset"]

_INNER_BLANK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class Labelled:
    """A rollout and what is known about it.

    Attributes:
        rollout: the rollout (its ``group_id`` is the question).
        label: 1 when the final answer is right, 0 when wrong, None when unknown.
        first_error: index of the first wrong step, -1 when every step is right, None
            for outcome-only data.
    """

    rollout: Rollout
    label: int | None
    first_error: int | None = None

    @property
    def step_labelled(self) -> bool:
        return self.first_error is not None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{path}:{number}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise InputError(f"{path}:{number}: a row must be a JSON object")
                    yield number, row
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e


def _gsm8k_references(data: Path) -> dict[str, str]:
    path = data / "references" / "gsm8k_test.jsonl"
    return {row["question"].strip(): row["answer"] for _, row in _read_jsonl(path)}


def _steps(
    name: str,
    key: str,
    question: str,
    reference: str,
    steps: list[str],
    first_error: int,
    group: str | None = None,
) -> Labelled:
    steps = [_INNER_BLANK.sub("\n", s.strip()) for s in steps]
    response = "\n\n".join(steps)
    found = len(get_slicer("blank-line").split(response))
    if found != len(steps) or any(not s or "\n\n" in s for s in steps):
        raise InputError(
            f"{name} {key}: field 'steps': {len(steps)} steps do not join into as many "
            f"blank-line segments ({found}); a step is empty or holds a blank line"
        )
    rollout = Rollout(
        id=f"{name}/{key}",
        group_id=f"{name}/{group or key}",
        question=question,
        reference=reference,
        response=response,
        metadata={"dataset": name},
    )
    return Labelled(rollout, int(first_error < 0), first_error)


def _processbench(split: str) -> Callable[[Path], list[Labelled]]:
    def load(data: Path) -> list[Labelled]:
        rows = json.loads((data / "step_labels" / "processbench" / f"{split}.json").read_text())
        if split == "gsm8k":
            refs = _gsm8k_references(data)
        else:
            path = data / "references" / "math500_test.jsonl"
            refs = {row["problem"].strip(): row["solution"] for _, row in _read_jsonl(path)}
        return [
            _steps(
                f"processbench-{split}",
                row["id"],
                row["problem"],
                refs[row["problem"].strip()],
                row["steps"],
                int(row["label"]),
            )
            for row in rows
            if row["problem"].strip() in refs
        ]

    return load


def _gsm8k_solutions(data: Path) -> list[Labelled]:
    models = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
    path = data / "outcome_labels" / "gsm8k_example_model_solutions.jsonl"
    out = []
    for number, row in _read_jsonl(path):
        for model in models:
            solution = row[model]
            out.append(
                Labelled(
                    Rollout(
                        id=f"gsm8k-{number}/{model}",
                        group_id=f"gsm8k-{number}",
                        question=row["question"],
                        reference=row["ground_truth"],
                        response=solution["solution"],
                        metadata={"model": model},
                    ),
                    int(bool(solution["is_correct"])),
                )
            )
    return out


def _qwen25_math(data: Path) -> list[Labelled]:
    path = data / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl"
    out = []
    for _, row in _read_jsonl(path):
        for i, (response, right) in enumerate(zip(row["response"], row["score"], strict=True)):
            rollout = Rollout(
                id=f"qwen25-math-{row['idx']}/{i}",
                group_id=f"qwen25-math-{row['idx']}",
                question=row["question"],
                reference=row["gt_cot"],
                response=response,
            )
            out.append(Labelled(rollout, int(bool(right))))
    return out


def _bigbench_mistake(data: Path) -> list[Labelled]:
    path = data / "step_labels" / "bigbench_mistake_multistep_arithmetic.jsonl"
    return [
        _steps(
            "bigbench-mistake",
            str(number),
            row["input"],
            f"The answer is {row['target']}.",
            row["steps"],
            -1 if row["mistake_index"] is None else int(row["mistake_index"]),
        )
        for number, row in _read_jsonl(path)
    ]


def _prmbench(data: Path) -> list[Labelled]:
    path = data / "step_labels" / "prmbench_subset400_target_data.jsonl"
    out = []
    for _, row in _read_jsonl(path):
        errors = [int(e) - 1 for e in row["error_steps"]]  # 1-based in the file
        reference = "\n\n".join(s.strip() for s in row["original_process"])
        out.append(
            _steps(
                "prmbench",
                f"{row['classification']}/{row['idx']}",
                row["modified_question"],
                reference,
                row["modified_process"],
                min(errors) if errors else -1,
                group=hashlib.sha256(row["original_question"].encode()).hexdigest()[:12],
            )
        )
    return out


DATASETS: dict[str, Callable[[Path], list[Labelled]]] = {
    "processbench-gsm8k": _processbench("gsm8k"),
    "processbench-math": _processbench("math"),
    "gsm8k-solutions": _gsm8k_solutions,
    "qwen25-math": _qwen25_math,
    "bigbench-mistake": _bigbench_mistake,
    "prmbench": _prmbench,
}


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return int(value.strip().lower() in ("true", "1"))
    raise InputError(f"{where}: expected a 0/1 or true/false label, got {value!r}")


def _text(row: dict[str, Any], field: str, where: str) -> str:
    value = get_path(row, field)
    if not isinstance(value, str):
        raise InputError(f"{where}: field {field!r}: expected a string, got {value!r:.60}")
    return value


def _first_error(labels: Any, steps: int, where: str, scale: str = "auto") -> int:
    """The first wrong step of per-step labels (see the module docs), or -1."""
    if not isinstance(labels, list) or len(labels) != steps:
        raise InputError(f"{where}: expected a list of {steps} step labels, got {labels!r:.80}")
    values = []
    for label in labels:
        if isinstance(label, bool) or label in (-1, 0, 1):
            values.append(int(label))
        else:
            raise InputError(f"{where}: a step label must be -1, 0, 1 or true/false: {label!r}")
    if scale not in ("auto", "binary", "ternary"):
        raise InputError(f"step label scale must be auto, binary or ternary, not {scale!r}")
    if scale == "binary" and -1 in values:
        raise InputError(f"{where}: a -1 label on the binary scale")
    wrong = -1 if scale == "ternary" or (scale == "auto" and -1 in values) else 0
    return values.index(wrong) if wrong in values else -1


def _jsonl_steps(
    path: Path,
    fields: FieldMap,
    steps_field: str,
    first_error_field: str | None,
    step_labels_field: str | None,
    scale: str = "auto",
) -> list[Labelled]:
    if (first_error_field is None) == (step_labels_field is None):
        raise InputError("step-labelled data needs one of --first-error-field, --step-labels-field")
    out = []
    for number, row in _read_jsonl(path):
        where = f"{path}:{number}"
        steps = get_path(row, steps_field)
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise InputError(f"{where}: field {steps_field!r}: expected a list of step strings")
        if first_error_field is not None:
            first = get_path(row, first_error_field)
            if first is MISSING:  # a misspelt field must not label every step right
                keys = ", ".join(sorted(row)) if isinstance(row, dict) else "none"
                raise InputError(
                    f"{where}: field {first_error_field!r} is missing (the row's keys: {keys});"
                    " pass --first-error-field with the field that holds the index of the"
                    " first wrong step (-1 or null: none)"
                )
            first = -1 if first is None else first
            if (
                isinstance(first, bool)
                or not isinstance(first, int)
                or not -1 <= first < len(steps)
            ):
                raise InputError(
                    f"{where}: field {first_error_field!r}: expected -1 or a step index below"
                    f" {len(steps)}, got {first!r}"
                )
        else:
            assert step_labels_field is not None
            labels = get_path(row, step_labels_field)
            first = _first_error(labels, len(steps), f"{where}: field {step_labels_field!r}", scale)
        question = _text(row, fields.question, where)
        key = get_path(row, fields.id)
        group = get_path(row, fields.group_id)
        try:
            out.append(
                _steps(
                    f"jsonl:{path.name}", str(key) if key is not MISSING else f"L{number}",
                    question, _text(row, fields.reference, where), steps, first,
                    group=str(group) if group not in (MISSING, None) else question,
                )
            )  # fmt: skip
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    return out


def _jsonl(path: Path, fields: FieldMap, label_field: str) -> list[Labelled]:
    rows, errors = read_rollouts(str(path), fields)
    if errors:
        raise InputError(f"{len(errors)} bad rows; the first: {errors[0]}")
    out = []
    for row in rows:
        where = f"{row.path or path}:{row.line}: field {label_field!r}"
        value = get_path(row.data, label_field)
        if value is MISSING or value is None:
            raise InputError(f"{where}: missing")
        out.append(Labelled(row.rollout, _label(value, where)))
    return out


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    fields: FieldMap | None = None,
    label_field: str = "correct",
    steps_field: str | None = None,
    first_error_field: str | None = None,
    step_labels_field: str | None = None,
    step_labels_scale: str = "auto",
) -> list[Labelled]:
    """Load a labelled set by name (see the table above), or ``jsonl:PATH``.

    ``data_dir``: the folder of the built-in sets; default :func:`default_data_dir`.
    ``steps_field`` and one of ``first_error_field``/``step_labels_field``: read
    ``jsonl:PATH`` as step-labelled traces (see the module docs).
    """
    if name.startswith("jsonl:"):
        path = Path(name[len("jsonl:") :])
        if steps_field is not None:
            return _jsonl_steps(
                path, fields or FieldMap(), steps_field, first_error_field, step_labels_field,
                step_labels_scale,
            )  # fmt: skip
        return _jsonl(path, fields or FieldMap(), label_field)
    if name not in DATASETS:
        raise InputError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} or jsonl:PATH"
        )
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    if data is None or not data.is_dir():
        where = f"data folder {data} does not exist" if data else "no data folder was found"
        raise InputError(
            f"{where}: the built-in datasets ship in the data/ folder of a checkout of"
            " exprl-rewards (not in the wheel); clone the repository, or pass --data-dir"
            " (or set $EXPRL_DATA) to a copy of it"
        )
    return DATASETS[name](data)


def default_data_dir() -> Path | None:
    """``$EXPRL_DATA``, else the ``data/`` folder of the checkout this package runs from."""
    env = os.environ.get("EXPRL_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "data"
    return checkout if (checkout / "MANIFEST.md").is_file() else None
