"""Segment -> token alignment: tokenizer offsets vs the released decode-a-window scan.

On real traces (800 Qwen2.5-Math rollouts, cut at blank lines) tokenized with the
embedded judge's tokenizer (SmolLM2, a fast HF tokenizer):

- **ours**: the slicer cuts the text, then one ``searchsorted`` maps each token to the
  segment holding its first character (``token_segment_ids``); token offsets come from
  the tokenizer (``offset_mapping``), or from ids alone (``adapters.token_offsets``: each
  token's bytes from the byte-level vocabulary), which a trainer holding only ids uses;
- **released**: at every response token decode the last 10 tokens and start a new
  segment after a token whose window ends with the delimiter.

Prints the time of each (min/median/max over repeats), the ratio, and how often the
two agree on every token's segment. Where they differ, the scan is wrong: SmolLM2 fuses
a blank line with the next line's indentation into one token (``"\\n\\n  "``), whose
window does not end with the delimiter, so the scan misses that boundary.

    python benchmarks/alignment_speed.py [--traces 800] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from exprl_rewards.adapters import token_offsets
from exprl_rewards.judges.local_model import default_model_dir
from exprl_rewards.text.alignment import token_segment_ids
from exprl_rewards.text.slicers import get_slicer

DATA = Path(__file__).resolve().parents[1] / "data"
DELIMITER = "\n\n"


def traces(n: int) -> list[str]:
    path = DATA / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl"
    out: list[str] = []
    for line in path.read_text().splitlines():
        out.extend(json.loads(line)["response"])
    return out[:n]


def released(decode: Callable[[list[int]], Any], ids: list[int]) -> np.ndarray:
    segment, out = 0, []
    for t in range(len(ids)):
        out.append(segment)
        if decode(ids[max(0, t - 9) : t + 1]).endswith(DELIMITER):
            segment += 1
    return np.array(out)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def summary(times: list[float]) -> str:
    return f"{min(times):8.3f} {statistics.median(times):8.3f} {max(times):8.3f}"


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=800)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    texts = traces(args.traces)
    encoded = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    ids = [e["input_ids"] for e in encoded]
    offsets = [e["offset_mapping"] for e in encoded]
    slicer = get_slicer("blank-line")

    def ours_offsets() -> list[np.ndarray]:
        return [token_segment_ids(slicer.split(t), o) for t, o in zip(texts, offsets, strict=True)]

    def ours_ids() -> list[np.ndarray]:
        out = []
        for i in ids:
            text, offs = token_offsets(tokenizer, i)
            out.append(token_segment_ids(slicer.split(text), offs))
        return out

    def scan() -> list[np.ndarray]:
        return [released(tokenizer.decode, i) for i in ids]

    t_ours, a = timed(ours_offsets, args.repeats)
    t_ids, b = timed(ours_ids, args.repeats)
    t_rel, c = timed(scan, max(1, args.repeats))
    tokens = sum(map(len, ids))
    agree = sum(np.array_equal(x, z) for x, z in zip(a, c, strict=True))
    agree_ids = sum(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    print(f"{len(texts)} Qwen2.5-Math traces, {tokens} SmolLM2 tokens, delimiter blank line")
    print(f"{'method':<40} {'min s':>8} {'median':>8} {'max':>8}")
    print(f"{'ours: slicer + offsets + searchsorted':<40} {summary(t_ours)}")
    print(f"{'ours from ids: byte-level offsets':<40} {summary(t_ids)}")
    print(f"{'released: decode last 10 tokens each':<40} {summary(t_rel)}")
    r1 = statistics.median(t_rel) / statistics.median(t_ours)
    r2 = statistics.median(t_rel) / statistics.median(t_ids)
    print(f"released / ours: {r1:.1f}x; released / ours-from-ids: {r2:.1f}x")
    print(f"traces where every token's segment agrees with released: {agree}/{len(texts)}")
    print(f"ours from ids agrees with ours from offsets: {agree_ids}/{len(texts)}")
    return {
        "traces": len(texts),
        "tokens": tokens,
        "ours_s": t_ours,
        "ours_ids_s": t_ids,
        "released_s": t_rel,
        "ratio": r1,
        "ratio_ids": r2,
        "agree": agree,
        "agree_ids": agree_ids,
    }


if __name__ == "__main__":
    main()
