"""Rows per second of the score CLI over each kind of judge replica, on this machine.

The same GSM8K rollouts (score-only outcome template, no cache) are graded by the real
CLI against five deployments of the embedded judge (SmolLM2-135M-Instruct on vLLM's CPU
build), one at a time, each after an untimed warm-up run:

- **1 server**: one vLLM server, its threads on every core (the baseline; measured first
  and again last, to show the drift of the run);
- **2 servers**: two servers behind a repeated ``--base-url``, each on every core;
- **2 servers, a core each**: the same, each server's threads bound to its own core;
- **vLLM data parallel**: one server with ``--data-parallel-size 2``, a core per rank;
- **Ray Serve, 2 replicas** (``ray.serve.llm``; left out without ``ray[serve]``): two vLLM engines
  behind Ray Serve's OpenAI-compatible ingress, on a local cluster that declares 8
  logical CPUs (it asks for more than this machine's 2).

Prints the median wall time over ``--repeats``, rows per second, the ratio to the first
baseline, and the prompt tokens per second the judge processed, plus how long each
deployment took to become ready.

    python benchmarks/judge_replicas.py [--questions 24] [--repeats 3] [--no-serve]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import run_cli, write_gsm8k_input

from exprl_rewards.judges.local_model import DEFAULT_MODEL_NAME, VLLMServer, default_model_dir

SERVE_PORT = 8000


@contextlib.contextmanager
def bound(cores: str) -> Iterator[None]:
    """vLLM's CPU thread binding for servers started inside (``0|1``: a core per rank)."""
    saved = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cores
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        else:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = saved


@contextlib.contextmanager
def servers(*bindings: str, extra: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """vLLM servers, one per binding; their URLs."""
    with contextlib.ExitStack() as stack:
        urls = []
        for cores in bindings:
            with bound(cores):
                urls.append(stack.enter_context(VLLMServer(extra_args=list(extra))).url)
        yield urls


@contextlib.contextmanager
def ray_serve(replicas: int) -> Iterator[list[str]]:
    """The judge on Ray Serve LLM: ``replicas`` vLLM engines behind one endpoint."""
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    ray.init(include_dashboard=False, num_cpus=8, runtime_env={"env_vars": env},
             log_to_driver=False)  # fmt: skip
    config = LLMConfig(
        model_loading_config={
            "model_id": DEFAULT_MODEL_NAME,
            "model_source": str(default_model_dir()),
        },
        deployment_config={"num_replicas": replicas},
        placement_group_config={"bundles": [{"CPU": 1}]},  # a CPU-only engine
        engine_kwargs={
            "max_model_len": 2048,
            "enforce_eager": True,
            "max_logprobs": 20,
            "dtype": "bfloat16",
        },
    )
    try:
        serve.run(build_openai_app({"llm_configs": [config]}), blocking=False)
        url = f"http://127.0.0.1:{SERVE_PORT}/v1"
        deadline = time.monotonic() + 600
        while True:  # ready when a model is listed
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"{url}/models", timeout=5) as r,
            ):
                if json.load(r).get("data"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("Ray Serve did not become ready in 600 s")
            time.sleep(1)
        yield [url]
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def deployments(serve: bool) -> dict[str, Any]:
    every = f"0-{(os.cpu_count() or 1) - 1}"
    out: dict[str, Any] = {
        "1 server": lambda: servers(every),
        "2 servers": lambda: servers(every, every),
        "2 servers, a core each": lambda: servers("0", "1"),
        "vLLM data parallel 2": lambda: servers("0|1", extra=("--data-parallel-size", "2")),
    }
    if serve:
        try:
            import ray.serve.llm  # noqa: F401
        except ImportError as e:
            print(f"Ray Serve left out ({e}): pip install 'ray[serve]'")
        else:
            out["Ray Serve, 2 replicas"] = lambda: ray_serve(2)
    out["1 server (again)"] = out["1 server"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=24, help="GSM8K questions (x4 rollouts)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-serve", action="store_true", help="leave out Ray Serve")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        n = write_gsm8k_input(inp, args.questions)
        print(f"{n} rollouts, batch {args.batch_size}, median of {args.repeats} after a warm-up")
        base = None
        for i, (name, deploy) in enumerate(deployments(serve=not args.no_serve).items()):
            start = time.perf_counter()
            with deploy() as urls:
                ready = time.perf_counter() - start
                judge = [a for u in urls for a in ("--base-url", u)]
                judge += ["--model", DEFAULT_MODEL_NAME]
                runs = [Path(tmp) / f"{i}-{r}.jsonl" for r in range(-1, args.repeats)]  # a new
                # output each time: a reused one would resume, with nothing left to grade
                got = [run_cli(inp, out, judge, args.batch_size, []) for out in runs][1:]
            wall = statistics.median(g["wall"] for g in got)
            prompt = statistics.median(g["prompt"] for g in got)
            scored = statistics.median(g["scored"] for g in got)
            base = base or wall
            print(f"{name:24s} ready {ready:5.1f} s  {wall:5.1f} s  {n / wall:5.2f} rows/s  "
                  f"x{base / wall:4.2f}  judge {prompt / wall:6.0f} prompt tokens/s  "
                  f"scored {scored:.0f}/{n}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
