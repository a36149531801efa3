"""verl's reward loop with our reward: micro-batched async vs the sync per-sample function.

verl 0.9's ``RewardLoopWorker.compute_score_batch`` starts one ``run_single`` task per
sample, and the naive manager awaits an async ``compute_score`` on the worker's loop or
runs a sync one in a thread. Side by side, on the same GSM8K rollouts (4 per question)
against a real vLLM server with the embedded judge (score-only outcome template,
prefix cache reset before each run):

- **async**: :func:`~exprl_rewards.adapters.verl.compute_score`, one shared judge,
  the worker's tasks micro-batched into one pipeline batch;
- **sync**: :func:`~exprl_rewards.adapters.verl.compute_score_sync` in verl's executor
  threads, each call a batch of one on a fresh event loop.

Both run through verl's own worker and manager. Prints min/median/max wall time over
repeats, and the ratio.

    python benchmarks/verl_reward_loop.py [--questions 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import gsm8k_rollouts, judge_server, reset_prefix_cache, spread

from exprl_rewards.judges.local_model import default_model_dir


def _data(questions: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        from transformers import AutoTokenizer
        from verl import DataProto

    rollouts = gsm8k_rollouts(questions)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    encoded = [tokenizer(r.response, add_special_tokens=False)["input_ids"] for r in rollouts]
    width = max(len(ids) for ids in encoded)
    n = len(rollouts)
    responses = torch.full((n, width), tokenizer.pad_token_id or 0)
    attention = torch.zeros((n, 1 + width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        responses[i, : len(ids)] = torch.tensor(ids)
        attention[i, : 1 + len(ids)] = 1
    extra = [{"solution": r.reference, "question": r.question, "index": int(r.group_id)}
             for r in rollouts]  # fmt: skip
    return DataProto.from_dict(
        tensors={"prompts": torch.zeros((n, 1), dtype=torch.long), "responses": responses,
                 "attention_mask": attention},
        non_tensors={
            "data_source": np.array(["gsm8k"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": ""}] * n, dtype=object),
            "extra_info": np.array(extra, dtype=object),
        },
    )  # fmt: skip


def _worker(name: str, url: str, model: str, folder: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from omegaconf import OmegaConf
        from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    path = folder / f"reward_{name}.py"
    path.write_text(f"from exprl_rewards.adapters.verl import {name}  # noqa: F401\n")
    kwargs = {"base_url": url, "model": model, "mode": "outcome",
              "template": "outcome-score-only", "prefill": True, "max_tokens": 8,
              "constrain_scores": True, "concurrency": 32}  # fmt: skip
    config = OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(default_model_dir()), "tokenizer_path": None}},
        "reward": {
            "custom_reward_function": {"path": str(path), "name": name, "reward_kwargs": kwargs},
            "reward_manager": {"name": "naive", "source": "register",
                               "module": {"path": None, "name": None}},
            "reward_model": {"enable": False, "model_path": None},
            "sandbox_fusion": None,
        },
    })  # fmt: skip
    return RewardLoopWorker(config)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
    data = _data(args.questions)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # verl's managers take the thread's loop when made
    times: dict[str, list[float]] = {"compute_score": [], "compute_score_sync": []}
    scores: dict[str, list[float]] = {}
    with judge_server() as server, tempfile.TemporaryDirectory() as folder:
        workers = {name: _worker(name, server.url, server.model, Path(folder)) for name in times}
        for worker in workers.values():  # warm-up: connections, the grammar, the engine
            loop.run_until_complete(worker.compute_score_batch(data[:4]))
        for _ in range(args.repeats):
            for name, worker in workers.items():
                reset_prefix_cache(server)
                start = time.perf_counter()
                outputs = loop.run_until_complete(worker.compute_score_batch(data))
                times[name].append(time.perf_counter() - start)
                scores[name] = [o["reward_score"] for o in outputs]
    gap = max(abs(a - b) for a, b in zip(*scores.values(), strict=True))
    print(f"{len(data)} samples ({args.questions} questions x 4), verl RewardLoopWorker, "
          f"naive manager, SmolLM2-135M judge on a vLLM server (CPU); largest score gap "
          f"between the two: {gap:.4f}")  # fmt: skip
    for name, values in times.items():
        print(f"  {name:<20} {spread(values)}")
    ratio = statistics.median(times["compute_score_sync"]) / statistics.median(
        times["compute_score"]
    )
    print(f"  async micro-batched is {ratio:.2f}x the sync per-sample throughput")


if __name__ == "__main__":
    main()
