"""The judge options every command shares, and the judge they build."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ExpRLError
from ..judges.base import DEFAULT_MIN_MASS, Judge
from ..judges.cache import JudgeCache
from ..judges.guards import DEFAULT_GUARDS, GUARDS
from ..judges.local_model import DEFAULT_MODEL_NAME, cache_dir

__all__ = [
    "add_judge_arguments",
    "default_template",
    "engine_log_of",
    "engine_log_path",
    "is_embedded",
    "make_judge",
]

# The embedded judge's KV-cache block, in tokens. vLLM's CPU build defaults to 128, and its
# prefix cache reuses whole blocks only, so the short per-step requests of process
# scoring re-prefilled up to 127 shared tokens each. With 32 (benchmarks/RESULTS.md,
# process_cost.py --block-size 32) outcome, process-segment and process-prefix scoring
# all ran about 20% faster on this 2-core CPU.
EMBEDDED_BLOCK_SIZE = 32


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the "judge" option group: server, model, limits, prefill, cache."""
    j = parser.add_argument_group(
        "judge", "the embedded default judge, a server (--base-url, --model), a vLLM model in"
        " this process (--vllm-model) or a PRM (--prm); EXPRL_JUDGE_BASE_URL,"
        " EXPRL_JUDGE_MODEL and EXPRL_JUDGE_API_KEY set the server, as for the adapters",
    )  # fmt: skip
    urls = [u.strip() for u in os.environ.get("EXPRL_JUDGE_BASE_URL", "").split(",") if u.strip()]
    j.add_argument(
        "--base-url",
        action=_Replicas,
        default=urls or None,
        help="OpenAI-compatible server URL (.../v1); repeat for replicas (default:"
        " $EXPRL_JUDGE_BASE_URL, comma-separated; else the embedded judge)",
    )
    j.add_argument(
        "--model",
        default=os.environ.get("EXPRL_JUDGE_MODEL"),
        help="model name on the server (default: $EXPRL_JUDGE_MODEL)",
    )
    j.add_argument(
        "--judge-revision",
        metavar="ID",
        help="the judge model's identity (a checkpoint hash, a tag), recorded with every"
        " score and part of the cache key (default: what the server's /v1/models reports)",
    )
    j.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default: EXPRL_JUDGE_API_KEY, else"
        " OPENAI_API_KEY; none needed for a local vLLM server)",
    )
    j.add_argument(
        "--vllm-model", help="a model directory or name to run with vLLM in this process"
    )
    j.add_argument(
        "--prm",
        metavar="MODEL",
        help="a process reward model (a directory) as the judge, run with transformers in"
        " this process; needs --mode process-tagged (every step in one forward pass)",
    )
    j.add_argument(
        "--prm-convention",
        choices=("qwen", "shepherd"),
        default="qwen",
        help="how the PRM reads steps: qwen (Qwen2.5-Math-PRM: <extra_0> separators, a"
        " reward head) or shepherd (Math-Shepherd: a causal LM's + at a step tag)"
        " (default: %(default)s)",
    )
    j.add_argument(
        "--max-tokens",
        type=int,
        help="judge generation limit (default: 2048 as released; 384 for the embedded judge)",
    )
    j.add_argument(
        "--top-logprobs",
        type=int,
        default=20,
        help="logprobs per token for logprob-weighted scores (0: off)",
    )
    j.add_argument(
        "--min-mass",
        type=float,
        default=DEFAULT_MIN_MASS,
        help="logprobs refine a written score only when the score digits hold at least this"
        " probability at its token; else the written number stands (default: %(default)s)",
    )
    j.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (OpenAI-compatible servers)"
    )
    j.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds a judge request attempt may take in all, body included (default: 120)",
    )
    j.add_argument(
        "--constrain-scores",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score-only templates: decode only the scale's digits (vLLM structured outputs),"
        " so the judge always writes a score of its own choosing (default: on for the"
        " embedded judge, off for others)",
    )
    j.add_argument(
        "--no-prefill",
        action="store_true",
        help="do not start the judge's answer (for servers without continue_final_message)",
    )
    j.add_argument(
        "--cache",
        default=str(cache_dir() / "judge.sqlite"),
        help="judge cache file (default: %(default)s)",
    )
    j.add_argument("--no-cache", action="store_true", help="do not read or write the judge cache")
    j.add_argument(
        "--guards",
        default=",".join(DEFAULT_GUARDS),
        metavar="NAME,...",
        help=f"defences against responses that game the judge ({', '.join(GUARDS)}, or"
        " none): the content gate gives a response with no content the scale's minimum"
        " without a judge call; the neutraliser removes grader-directed text (score lines,"
        " instructions to the grader, forged end markers) from what the judge sees;"
        " verifier-cap[:CAP] caps a rollout whose final answer checks wrong against the"
        " reference's at CAP (calibrated 0..1, default 0.25); second-look[:FRACTION] judges"
        " that share of rollouts again in the other prompt order and unscores those whose"
        " two looks differ by more than 2 points (default: %(default)s)",
    )
    j.add_argument(
        "--no-judge-check",
        action="store_true",
        help="skip the check that the judge can grade before any work starts (the server's"
        " model list and a one-line request); a judge that is down then shows only as"
        " failed requests",
    )
    j.add_argument(
        "--verbose",
        action="store_true",
        help="show an in-process engine's own output (vLLM, torch) on the terminal instead"
        " of its log file",
    )


class _Replicas(argparse._AppendAction):  # an append action, as score_file reads it
    """``--base-url`` given again adds a replica; given once, it replaces the default
    from the environment instead of adding to it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: Any, option_string: str | None = None,
    ) -> None:  # fmt: skip
        current = getattr(namespace, self.dest, None)
        urls = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, [*urls, values])


def make_judge(args: argparse.Namespace, cache: JudgeCache | None) -> Judge:
    """The judge the options name: a server, a local vLLM model, or the embedded default."""
    top = args.top_logprobs or None
    if args.model and not args.base_url:
        raise ExpRLError(
            f"--model {args.model} (or $EXPRL_JUDGE_MODEL) names a model on a server, but no"
            " --base-url (or $EXPRL_JUDGE_BASE_URL) says which server; add --base-url"
            " http://HOST:PORT/v1 (or use --vllm-model for a model run in this process)"
        )
    if sum(map(bool, (args.base_url, args.vllm_model, getattr(args, "prm", None)))) > 1:
        raise ExpRLError("--base-url, --vllm-model and --prm each name a judge; give one")
    if getattr(args, "prm", None):
        if getattr(args, "mode", None) not in (None, "process-tagged"):
            raise ExpRLError(
                f"--prm scores every step of a rollout in one pass: it needs --mode"
                f" process-tagged, not {args.mode}"
            )
        from ..judges.prm import PRMJudge

        return PRMJudge(args.prm, convention=args.prm_convention)
    if args.base_url:
        if not args.model:
            raise ExpRLError("--base-url needs --model, the name the server serves")
        from ..judges.openai import OpenAIJudge

        return OpenAIJudge(
            args.model, base_url=args.base_url, api_key_env=args.api_key_env,
            max_tokens=args.max_tokens or 2048, top_logprobs=top, concurrency=args.concurrency,
            timeout=args.timeout, cache=cache, prefill=not args.no_prefill,
            constrain_scores=bool(args.constrain_scores), revision=args.judge_revision,
        )  # fmt: skip
    from ..judges.logs import engine_output
    from ..judges.vllm import VLLMJudge

    log = None if args.verbose else engine_log_path()
    if args.vllm_model:
        return VLLMJudge(
            args.vllm_model, max_tokens=args.max_tokens or 2048, top_logprobs=top, cache=cache,
            constrain_scores=bool(args.constrain_scores), engine_log=log,
        )  # fmt: skip
    from ..judges.local_model import default_model_dir

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault(
        "VLLM_LOGGING_LEVEL", "WARNING"
    )  # its start-up log would bury the summary
    with engine_output(log):  # building the model from its wheel, once per machine
        model_dir = default_model_dir()
    return VLLMJudge(
        model_dir, name=DEFAULT_MODEL_NAME, engine_process=False, max_model_len=2048,
        enforce_eager=True, block_size=EMBEDDED_BLOCK_SIZE,
        max_tokens=args.max_tokens or 384, top_logprobs=top, cache=cache,
        constrain_scores=args.constrain_scores is not False, engine_log=log,
    )  # fmt: skip


def is_embedded(args: argparse.Namespace) -> bool:
    """The options name the embedded default judge (no server, no vLLM model)."""
    return not args.base_url and not args.vllm_model and not getattr(args, "prm", None)


def default_template(args: argparse.Namespace, mode: str) -> str | None:
    """The template when none is given: the mode's score-only one for the embedded judge
    (a 135M model rarely ends its reasoning with a score line), else the mode's own."""
    return f"{mode}-score-only" if is_embedded(args) else None


def engine_log_path() -> Path:
    """A new log file for this process's in-process engine, under the cache folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "logs" / f"engine-{stamp}-{os.getpid()}.log"


def engine_log_of(judge: Judge) -> Path | None:
    """The judge's engine log, when it has written one."""
    log = getattr(judge, "engine_log", None)
    return log if isinstance(log, Path) and log.exists() and log.stat().st_size else None
