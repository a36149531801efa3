"""``python -m exprl_rewards.train CONFIG``: train; ``... train eval CONFIG``: evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli.parser import ExpRLParser, RawDefaultsFormatter
from ..errors import ExpRLError
from .config import PRESETS, TrainConfig, load_config

EPILOG = f"""
CONFIG is a TOML file or a preset ({", ".join(PRESETS)}). Examples:
  python -m exprl_rewards.train cpu-tiny --out runs/stage1
  python -m exprl_rewards.train cpu-tiny --stage II --out runs/stage2 --init runs/stage1
  python -m exprl_rewards.train eval cpu-tiny --out runs/stage1
  python -m exprl_rewards.train plot runs/stage1 runs/control -o runs/curves.png
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = ExpRLParser(
        prog="python -m exprl_rewards.train",
        description="ExpRL's thin reference trainer (Stage I: judge rewards against a hidden "
        "reference; Stage II: sparse final-answer rewards).",
        epilog=EPILOG,
        formatter_class=RawDefaultsFormatter,
    )
    p.add_argument("command", nargs="?", choices=["train", "eval"], default="train")
    p.add_argument("config", help="a TOML file or a preset name")
    p.add_argument("--out", type=Path, help="run folder (overrides run.out)")
    p.add_argument("--steps", type=int, help="total steps (overrides run.steps)")
    p.add_argument("--stage", choices=["I", "II"], help="overrides run.stage")
    p.add_argument("--lr", type=float, help="overrides optim.lr (0: a control run)")
    p.add_argument("--seed", type=int, help="overrides run.seed")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, help="start from another run's checkpoint (Stage II)")
    p.add_argument("--eval", action="store_true", help="evaluate before and after training")
    p.add_argument("--no-progress", action="store_true")
    args = argv if argv and argv[0] in ("train", "eval") else ["train", *argv]
    return p.parse_args(args)


def configure(args: argparse.Namespace) -> TrainConfig:
    config = load_config(args.config)
    run = {k: v for k, v in (("out", args.out), ("steps", args.steps), ("stage", args.stage),
                             ("seed", args.seed)) if v is not None}  # fmt: skip
    optim = {"lr": args.lr} if args.lr is not None else {}
    return config.override({"run": run, "optim": optim})


def plot(argv: Sequence[str]) -> int:
    p = ExpRLParser(
        prog="python -m exprl_rewards.train plot",
        description="Draw the metrics of runs side by side (reward, KL, entropy, length).",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with metrics.jsonl)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--labels", nargs="+", help="one label per run (default: folder names)")
    args = p.parse_args(argv)
    from .plot import plot_runs

    try:
        print(plot_runs(args.runs, args.out, args.labels))
    except (ExpRLError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plot"]:
        return plot(argv[1:])
    args = parse_args(argv)
    try:
        config = configure(args)
        from .run import Run  # imports torch, transformers and vLLM

        resume = args.resume or args.command == "eval"
        from .resume import check_run_folder

        check_run_folder(config, resume=resume)  # at once, before torch and the models load
        judge = args.command != "eval"  # eval checks answers: no judge server
        with Run(config, resume=resume, init=args.init, judge=judge) as run:
            if args.command == "eval":
                print(json.dumps(run.evaluate(name=f"step{run.step}")))
                return 0
            if args.eval and run.step == 0:
                print(json.dumps(run.evaluate(name="before")))
            run.train(progress=not args.no_progress)
            if run.stopped_by_alarm:
                print(f"stopped: the hack alarm fired; see {run.out / 'alarm.json'} and the"
                      " hack/ columns of metrics.jsonl", file=sys.stderr)  # fmt: skip
                return 4
            if args.eval:
                print(json.dumps(run.evaluate(name="after")))
    except ExpRLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
