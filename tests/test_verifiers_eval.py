"""The judge plugin on the path a verifiers run takes: ``vf-eval`` itself, in a
subprocess, with verifiers 0.4's ``SingleAgentEnv``, its ``null`` harness running the
chat program in the ``subprocess`` runtime (built by ``uv`` from PyPI), its interception
proxy in front of a streaming policy, and ``Task.score`` calling the plugged
``exprl-judge`` after each rollout. The policy and the judge are the fault server's
deterministic ones over real HTTP (the taskset ``exprl_demo_math`` sets both replies);
the run's own ``traces.jsonl`` is read back.

Runs in ``.venv-verifiers`` (verifiers needs ``openai<3``); the main environment skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

pytest.importorskip(
    "verifiers.v1", reason="verifiers needs openai<3: make test runs it in .venv-verifiers"
)
HERE = Path(__file__).parent
VF_EVAL = Path(sys.executable).parent / "vf-eval"
pytestmark = pytest.mark.skipif(
    not VF_EVAL.exists() or shutil.which("uv", path=str(VF_EVAL.parent)) is None,
    reason="vf-eval and uv must be in the interpreter's bin (make test installs both)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(models=("marks",)) as s:
        yield s


def vf_eval(tmp: Path, policy: str, judge: str, **judge_options: Any) -> list[dict[str, Any]]:
    """Run ``vf-eval`` on the demo taskset; return its episodes from ``traces.jsonl``."""
    options = "".join(f"{k} = {json.dumps(v)}\n" for k, v in judge_options.items())
    (tmp / "eval.toml").write_text(
        f'model = "marks"\npush = false\noutput_dir = "{tmp / "out"}"\n'
        f'[client]\nbase_url = "{policy}"\napi_key_var = "EXPRL_TEST_KEY"\n'
        '[env.taskset]\nid = "exprl-demo-math"\n'
        '[env.agent.harness]\nid = "null"\n[env.agent.runtime]\ntype = "subprocess"\n'
        '[[env.taskset.task.judges]]\nid = "exprl-judge"\nname = "exprl"\n'
        f'base_url = "{judge}"\nmodel = "marks"\ntop_logprobs = 0\n{options}'
    )  # fmt: skip
    env = {**os.environ, "EXPRL_TEST_KEY": "x", "PATH": f"{VF_EVAL.parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(HERE / "verifiers_tasks"), str(HERE)])}  # fmt: skip
    run = subprocess.run(
        [str(VF_EVAL), "@", str(tmp / "eval.toml")],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (traces,) = (tmp / "out").glob("*/traces.jsonl")
    episodes = [json.loads(line) for line in traces.read_text().splitlines()]
    return sorted(episodes, key=lambda e: e["task"]["data"]["idx"])


def test_vf_eval_records_the_judges_rewards(server: FaultServer, tmp_path: Path) -> None:
    before = len(server.bodies)
    episodes = vf_eval(tmp_path, server.url, server.url)
    traces = [e["traces"][0] for e in episodes]
    assert [t["rewards"]["exprl"]["score"] for t in traces] == [1.0, 0.0, 0.0]
    assert all(e["ok"] and not t["errors"] for e, t in zip(episodes, traces, strict=True))
    bodies = server.bodies[before:]
    policy = [b for b in bodies if b.get("stream")]
    judged = [b for b in bodies if not b.get("stream")]
    assert len(policy) == 3
    assert len(judged) == 2  # "Thought process:" is a master key: gated, no judge call
    graded = " ".join(b["messages"][-1]["content"] for b in judged)
    assert "4, since 2 + 2 = 4" in graded  # the policy's reply
    assert "3 + 3 = 6" in graded  # the reference


def test_a_dead_judge_errors_every_rollout_instead_of_scoring_it(
    server: FaultServer, tmp_path: Path
) -> None:
    episodes = vf_eval(tmp_path, server.url, "http://127.0.0.1:9/v1", concurrency=2)
    judged, gated = episodes[:2], episodes[2]
    for episode in judged:
        trace = episode["traces"][0]
        assert not episode["ok"]
        assert trace["rewards"].get("exprl") is None  # no fake 0
        assert "JudgeUnavailable" in trace["errors"][0]["message"]
    # The master key needs no judge: its 0 is the gate's, unless it shared a
    # micro-batch with the dead judge's samples, which then stops it too.
    trace = gated["traces"][0]
    if gated["ok"]:
        assert trace["rewards"]["exprl"]["score"] == 0.0
    else:
        assert "JudgeUnavailable" in trace["errors"][0]["message"]
