"""Build examples/rollouts.jsonl: a few dozen real rollouts with human references.

Sources (both MIT-licensed, see data/MANIFEST.md):
- openai/grade-school-math, example_model_solutions.jsonl: GSM8K test questions, the
  human reference solution, and four model solutions each (6B/175B, fine-tuned and
  verifier-selected), with programmatic correctness labels.
- QwenLM/Qwen2.5-Math, evaluation/data/eval_rm_maj_example/math_cot_100.jsonl: MATH
  problems with the human reference (gt_cot) and sampled Qwen2.5-Math responses, with
  rule-based correctness labels.

Each row is in the native layout (id, group_id, question, reference, response) plus
`correct` (the label) and `source`. Rollouts of one problem share a group_id.

    python examples/build_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k(n_questions: int) -> list[dict[str, object]]:
    rows = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for q, line in zip(range(n_questions), f, strict=False):
            item = json.loads(line)
            for model in MODELS:
                rows.append(
                    {
                        "id": f"gsm8k-{q}-{model}",
                        "group_id": f"gsm8k-{q}",
                        "question": item["question"],
                        "reference": item["ground_truth"],
                        "response": item[model]["solution"],
                        "correct": item[model]["is_correct"],
                        "source": "openai/grade-school-math example_model_solutions (MIT)",
                    }
                )
    return rows


def math(n_problems: int, per_problem: int = 4) -> list[dict[str, object]]:
    rows = []
    with (DATA / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl").open() as f:
        for line in f:
            item = json.loads(line)
            responses = item["code"][:per_problem]
            # Short problems only: the embedded judge has a 2,048-token context.
            if len(item["gt_cot"]) > 700 or max(map(len, responses)) > 1200:
                continue
            for i, response in enumerate(responses):
                rows.append(
                    {
                        "id": f"math-{item['idx']}-{i}",
                        "group_id": f"math-{item['idx']}",
                        "question": item["question"],
                        "reference": item["gt_cot"],
                        "response": response,
                        "correct": item["score"][i],
                        "source": "QwenLM/Qwen2.5-Math eval_rm_maj_example math_cot_100 (MIT)",
                    }
                )
            if len(rows) >= n_problems * per_problem:
                break
    return rows


def main() -> None:
    rows = gsm8k(6) + math(3)
    out = ROOT / "examples" / "rollouts.jsonl"
    out.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    print(f"wrote {len(rows)} rollouts to {out}")


if __name__ == "__main__":
    main()
