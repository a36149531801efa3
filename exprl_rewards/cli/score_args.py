"""The score command's options (``python -m exprl_rewards.score --help``).

Kept apart from :mod:`exprl_rewards.cli.score`, which runs them, so that the command's
flow reads on one screen. Building the parser imports no judge backend.
"""

from __future__ import annotations

import argparse
import importlib.metadata

from ..io.jsonl import FieldMap
from ..judges.templates import DEFAULT_MODE, MODES, TEMPLATES
from ..rewards.calibration import NORM_STRATEGIES
from ..text.slicers import PRESETS
from .failures import DEFAULT_MAX_BACKEND_FAILURES
from .judge_args import add_judge_arguments
from .parser import ExpRLParser

__all__ = ["positive_int", "score_parser"]


def _version() -> str:
    """The installed package's version (read from its metadata, not the package, which
    imports this module's callers)."""
    try:
        return importlib.metadata.version("exprl-rewards")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def positive_int(value: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return number


def _share(value: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1")
    return number


def score_parser() -> argparse.ArgumentParser:
    """The score command's argument parser."""
    p = ExpRLParser(
        prog="python -m exprl_rewards.score",
        description="Grade JSONL rollouts with an LLM judge against hidden references (ExpRL).",
        epilog="exit codes: 0 done; 1 a bad option or output; 2 bad input rows; 3 the judge"
        " failed (unreachable, or rollouts it never answered: rerun to grade them); 130"
        " interrupted (rerun to resume)",
    )
    p.add_argument(
        "input",
        help="JSONL rollouts (.jsonl, .jsonl.gz...), Parquet, a folder of them, a URI"
        " (s3://, gs://...), or - for standard input",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="JSONL output (appended, resumable), or - for standard output",
    )
    p.add_argument("--version", action="version", version=f"exprl-rewards {_version()}")
    g = p.add_argument_group("what to grade")
    g.add_argument(
        "--mode",
        choices=MODES,
        help=f"what the judge scores: the whole response (outcome) or each step (process-*;"
        f" the released setting is process-segment with --slicer exprl); the same default"
        f" as serve and the adapters (default: {DEFAULT_MODE}; process-tagged with --prm)",
    )
    g.add_argument(
        "--route",
        choices=["released"],
        help="grade each row by its domain, as the released mixed-domain trainer:"
        " process-segment ('###' steps) for ability math and multiple-choice science,"
        " outcome with a domain template for code, other science and the rest; reads each"
        " row's --ability-field and --extra-info-field",
    )
    g.add_argument(
        "--template",
        help=f"a built-in ({', '.join(TEMPLATES)}) or a .jinja file; default: the mode's",
    )
    g.add_argument(
        "--score-only",
        action="store_true",
        help="the --template file asks for the score alone (logprob scoring, constrained digits)",
    )
    g.add_argument(
        "--slicer",
        choices=sorted(PRESETS),
        help="step slicer for process modes (default: exprl, '###'; --route picks its own)",
    )
    g.add_argument(
        "--order",
        choices=["cache", "released"],
        default="cache",
        help="prompt section order (default: cache)",
    )
    g.add_argument(
        "--estimator", help="advantage estimator (default: grpo for outcome, delta for process)"
    )
    g.add_argument(
        "--calibration",
        metavar="FILE|STRATEGY",
        help="a calibrator saved by python -m exprl_rewards.audit, or a released norm_strategy: "
        + ", ".join(NORM_STRATEGIES)
        + " (default: (N - 1) / 4)",
    )
    g.add_argument(
        "--reduce",
        choices=["last", "mean", "min", "sum"],
        help="a process rollout's score from its step scores (default: last for "
        "process-prefix, mean for process-segment; sum: the released is_process_sum)",
    )
    g.add_argument(
        "--think-strip",
        action="store_true",
        help="grade only what follows the policy's last </think> (released think_strip)",
    )
    g.add_argument(
        "--truncated",
        choices=["zero", "judge", "unscored"],
        default="zero",
        help="rollouts cut at max length (default: zero, as released)",
    )
    f = p.add_argument_group("input fields (dotted paths, e.g. extra_info.solution)")
    for name, default in vars(FieldMap()).items():
        f.add_argument(
            f"--{name.replace('_', '-')}-field",
            default=default,
            metavar="PATH",
            help=f"(default: {default})",
        )
    f.add_argument("--ability-field", default="ability", metavar="PATH",
                   help="the row's domain, for --route (default: ability)")  # fmt: skip
    f.add_argument("--extra-info-field", default="extra_info", metavar="PATH",
                   help="multiple-choice fields (choices, answerKey), for --route"
                   " (default: extra_info)")  # fmt: skip
    add_judge_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="rollouts per batch; whole groups are kept together (default: 64)",
    )
    r.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="bad input rows: stop with exit code 2, or skip them",
    )
    r.add_argument("--errors-file", help="where skipped rows go (default: OUTPUT.errors.jsonl)")
    r.add_argument("--summary-json", help="also write the summary as JSON here")
    r.add_argument(
        "--max-backend-failures",
        type=_share,
        default=DEFAULT_MAX_BACKEND_FAILURES,
        metavar="SHARE",
        help="stop (exit 3) once more than this share of the rollouts graded so far got no"
        " answer from the judge; such rollouts are never written, a rerun grades them"
        " (default: %(default)s)",
    )
    r.add_argument(
        "--output-field",
        default="exprl",
        help="key under which results are added to each row (default: exprl)",
    )
    r.add_argument(
        "--token-advantages",
        action="store_true",
        help="write per-token advantages for rows with token offsets",
    )
    r.add_argument(
        "--progress",
        choices=["auto", "on", "lines", "off"],
        default="auto",
        help="progress on stderr, row by row with the time left: on (a bar), lines (a plain"
        " line a second at most, for logs), auto (the bar on a terminal, else lines), off"
        " (default: %(default)s)",
    )
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="grade on Ray Data: a local cluster, or the one at ADDRESS (pip install "
        "'exprl-rewards[ray]')",
    )
    r.add_argument(
        "--ray-actors", type=positive_int, default=2, help="judge actors on Ray (default: 2)"
    )
    r.add_argument(
        "--ray-cpus", type=float, default=0.5, help="CPUs each Ray actor reserves (default: 0.5)"
    )
    r.add_argument(
        "--ray-gpus",
        type=float,
        default=0,
        help="GPUs each Ray actor reserves, for a judge in the actor (--vllm-model or the"
        " embedded one; default: 0)",
    )
    return p
