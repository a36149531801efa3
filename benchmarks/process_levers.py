"""What makes process scoring cheaper on CPU? Each lever measured side by side in one run.

The main job's rollouts (``examples/rollouts.jsonl``: 36 GSM8K, MATH and Qwen2.5-Math
solutions, one step per line) are graded in score-only form through
:class:`~exprl_rewards.RewardPipeline` and :class:`OpenAIJudge`, with the scores
constrained to one digit as the embedded judge does, by vLLM servers that differ only in
their KV block (the unit the prefix cache reuses). All servers run at once and the runs
are interleaved, so drift hits every setting alike; each server runs one request batch at
a time. Settings, from the state before issue 14 to now:

- ``before``: block 128 (vLLM CPU's default), the score-only templates as they were
  (a reminder of about 25 tokens after the graded text);
- ``block 32``: the same templates, a 32-token block;
- ``block 32, short tail``: the reminder cut to ``Score 1-5:`` (process-prefix keeps
  ``Step k of N.``; the fence tags stay). Measured and rejected: with constrained
  decoding (as here) the scores held, but without it the 135M judge wrote no digit
  after ``Score 1-5:`` on any of 104 units; the shipped templates keep the old reminders.

(vLLM's CPU attention takes blocks in multiples of 32 only: 16 fails to start.)

For each setting and mode it reports requests, prompt tokens, tokens after the graded
text per request (``tail``, the part every step request repeats), prompt tokens served
from the prefix cache, prompt tokens prefilled, wall time (min/median/max) and the
process/outcome wall-time ratio within the setting. The prefix cache is reset before each
run. The score agreement columns compare each setting's scores with ``before``'s.

    python benchmarks/process_levers.py [--repeats 2] [--limit 36]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from _common import Cost, judge_server, measure, spread

from exprl_rewards import OpenAIJudge, RewardPipeline, Rollout
from exprl_rewards.io.jsonl import read_rollouts
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.judges.templates import JudgeTemplate, Mode, load_template

MODES: tuple[Mode, ...] = ("outcome", "process-segment", "process-prefix")

# The score-only templates as shipped (their reminders), for the "before" and "block 32" settings.
BEFORE: dict[Mode, str] = {
    "outcome": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_outcome_system.jinja" %}

Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## Student's reasoning
{{ fence(response, "REASONING") }}{% endblock %}
{% block reminder %}Your score, one digit from 1 to 5:{% endblock %}
""",
    "process-segment": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_process_system.jinja" %}

Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## Step {{ step_index }} of {{ num_steps }} of the student's reasoning
{{ fence(step, "STEP", key=response) }}{% endblock %}
{% block reminder %}Your score, one digit from 1 to 5:{% endblock %}
""",
    "process-prefix": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_prefix_system.jinja" %}

Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## The student's reasoning so far
{{ fence(previous ~ step, "REASONING", key=response) }}{% endblock %}
{% block reminder %}The reasoning above stops after step {{ step_index }} of {{ num_steps }}. \
Your score for the progress so far, one digit from 1 to 5:{% endblock %}
""",
}


# The short reminders measured for issue 14 and rejected: without constrained decoding the
# 135M judge scored 0 of 104 units with them (it no longer wrote a digit after "Score 1-5:").
SHORT: dict[Mode, str] = {
    "outcome": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_outcome_system.jinja" %}

Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## Student's reasoning
{{ fence(response, "REASONING") }}{% endblock %}
{% block reminder %}Score 1-5:{% endblock %}
""",
    "process-segment": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_process_system.jinja" %}

Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## Step {{ step_index }} of {{ num_steps }}
{{ fence(step, "STEP", key=response) }}{% endblock %}
{% block reminder %}Score 1-5:{% endblock %}
""",
    "process-prefix": """{% extends "_base.jinja" %}
{% block prefill %}Score: {% endblock %}
{% block system %}{% include "_prefix_system.jinja" %}

After the reasoning, a line says at which step of how many it stops. Answer with the score only: a single digit from 1 to 5, nothing else.{% endblock %}
{% block graded %}## The student's reasoning so far
{{ fence(previous ~ step, "REASONING", key=response) }}{% endblock %}
{% block reminder %}Step {{ step_index }} of {{ num_steps }}. Score 1-5:{% endblock %}
""",
}


@dataclass(frozen=True)
class Setting:
    name: str
    block: int
    short_tail: bool

    def template(self, mode: Mode) -> JudgeTemplate:
        return load_template(
            (SHORT if self.short_tail else BEFORE)[mode], mode=mode, score_only=True
        )


SETTINGS = (
    Setting("before", 128, False),
    Setting("block 32", 32, False),
    Setting("block 32, short tail", 32, True),
)


@dataclass
class Run:
    cost: Cost
    requests: int
    scores: list[float | None]


def run_once(server: VLLMServer, rollouts: Sequence[Rollout], setting: Setting, mode: Mode) -> Run:
    judge = OpenAIJudge(
        server.model, base_url=server.url, top_logprobs=20, concurrency=16,
        constrain_scores=True,
    )  # fmt: skip
    pipeline = RewardPipeline(judge, mode=mode, template=setting.template(mode), slicer="newline")
    batch = []
    cost = measure(server, lambda: batch.append(pipeline.score_sync(rollouts)))
    segments = [s for r in batch[0].results for s in r.segments]
    return Run(cost, len(segments), [s.score for s in segments])


def tail_tokens(rollouts: Sequence[Rollout], setting: Setting, mode: Mode) -> float:
    """Mean prompt tokens after the graded text per request (chat markup and prefill included)."""
    from transformers import AutoTokenizer  # a vLLM dependency; the benchmark needs vLLM

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    pipeline = RewardPipeline(
        OpenAIJudge("unused", base_url="http://127.0.0.1:9/v1", api_key="-"),
        mode=mode,
        template=setting.template(mode),
        slicer="newline",
    )
    counts = []
    for rollout in rollouts:
        for request in pipeline.requests(rollout, pipeline.segments(rollout)):
            text = str(
                tokenizer.apply_chat_template(
                    [{"role": m["role"], "content": m["content"]} for m in request.messages],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
            text += request.prefill
            graded_end = text.rindex("\n[END ")
            counts.append(len(tokenizer(text[graded_end:])["input_ids"]))
    return statistics.mean(counts)


def agreement(a: Sequence[float | None], b: Sequence[float | None]) -> str:
    """Mean absolute difference and exact-match share of two runs' scores."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return "-"
    mad = statistics.mean(abs(x - y) for x, y in pairs)
    same = sum(round(x) == round(y) for x, y in pairs) / len(pairs)
    return f"{mad:.2f} / {same:.0%}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--limit", type=int, default=36, help="rollouts from examples/rollouts.jsonl")
    args = p.parse_args()
    rows, _ = read_rollouts("examples/rollouts.jsonl")
    rollouts = [row.rollout for row in rows[: args.limit]]
    configs = [(s, m) for s in SETTINGS for m in MODES]
    walls: dict[tuple[Setting, Mode], list[float]] = {c: [] for c in configs}
    last: dict[tuple[Setting, Mode], Run] = {}
    with ExitStack() as stack:
        servers = {
            b: stack.enter_context(judge_server(b)) for b in sorted({s.block for s in SETTINGS})
        }
        for setting in SETTINGS:  # warm-up: first long prompts and grammars run slow
            for mode in MODES:
                run_once(servers[setting.block], rollouts[:4], setting, mode)
        for _ in range(args.repeats):
            for c in configs:
                last[c] = run_once(servers[c[0].block], rollouts, *c)
                walls[c].append(last[c].cost.wall)
                print(f"  {c[0].name}, {c[1]}: {walls[c][-1]:.1f} s", file=sys.stderr, flush=True)
    print(
        f"{len(rollouts)} rollouts of examples/rollouts.jsonl, one step per line; score-only, "
        f"constrained to one digit, cache order; concurrency 16; {args.repeats} repeats, "
        "interleaved; prefix cache reset before each run"
    )
    print(
        f"{'setting':<21} {'mode':<16} {'req':>4} {'prompt tok':>10} {'tail':>5} {'cached':>7} "
        f"{'prefilled':>9} {'wall s min/med/max':>19} {'x outcome':>9} {'vs before':>11}"
    )
    median = {c: statistics.median(w) for c, w in walls.items()}
    for setting, mode in configs:
        run = last[(setting, mode)]
        ratio = median[(setting, mode)] / median[(setting, "outcome")]
        print(
            f"{setting.name:<21} {mode:<16} {run.requests:>4} {run.cost.prompt:>10.0f} "
            f"{tail_tokens(rollouts, setting, mode):>5.1f} {run.cost.hit_rate:>7.1%} "
            f"{run.cost.computed:>9.0f} {spread(walls[(setting, mode)]):>19} {ratio:>8.2f}x "
            f"{agreement(last[(SETTINGS[0], mode)].scores, run.scores):>11}"
        )
    print("x outcome: median wall time / that of outcome scoring in the same setting")
    print("vs before: mean |score difference| / share of equal rounded scores, against 'before'")
    before = median[(SETTINGS[0], "process-prefix")]
    for setting in SETTINGS:
        prefix = median[(setting, "process-prefix")]
        print(
            f"{setting.name}: process-prefix {median[(setting, 'process-prefix')] / median[(setting, 'outcome')]:.2f}x "
            f"outcome, process-segment {median[(setting, 'process-segment')] / median[(setting, 'outcome')]:.2f}x; "
            f"process-prefix wall {prefix:.1f} s ({prefix / before:.0%} of before)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
