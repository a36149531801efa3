"""Peak memory and time of the trainer's log-prob pass: response-only projection vs full.

One forward and backward pass of the policy (SmolLM2-135M, float32, CPU) over a batch
of ``--batch`` rollouts of ``--prompt`` + ``--response`` tokens, computing the response
tokens' log-probs and entropies two ways, each in a fresh process (peak RSS is per
process):

- **full**: the model's logits at every position ``[B, L, V]``, then a log-softmax of
  the response positions (the trainer before this change);
- **response-only**: the decoder's hidden states, projected onto the vocabulary at the
  response positions only, and log-sum-exp instead of a log-softmax
  (``Policy.logprobs`` now);
- **checkpointed**: the same with gradient checkpointing (the decoder's activations
  recomputed in the backward pass instead of kept).

    python benchmarks/logprob_memory.py [--batch 8] [--prompt 128] [--response 128 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(variant: str, batch: int, prompt: int, response: int) -> dict[str, float]:
    import torch

    from exprl_rewards.judges.local_model import default_model_dir
    from exprl_rewards.train.policy import Batch, Policy

    torch.manual_seed(0)
    policy = Policy(default_model_dir(), reference=False)
    vocab = policy.model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt + response)).tolist()
    data = Batch([r[:prompt] for r in ids], [r[prompt:] for r in ids])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "full":
        logits = policy.model(input_ids=data.input_ids, attention_mask=data.attention).logits
        rows = torch.arange(batch).unsqueeze(-1)
        logp_all = torch.log_softmax(logits[rows, data.positions].float(), -1)
        logp = logp_all.gather(-1, data.tokens.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            (-(logp_all.exp() * logp_all).sum(-1)).mean()
    else:
        if variant == "checkpointed":
            policy.model.gradient_checkpointing_enable()
        logp, _ = policy.logprobs(data)
    (logp * data.mask).sum().backward()  # type: ignore[no-untyped-call]
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall": wall, "added_mb": (peak - before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--response", type=int, nargs="+", default=[128, 512])
    p.add_argument("--measure", help=argparse.SUPPRESS)  # the child: "variant,response"
    args = p.parse_args()
    if args.measure:
        variant, response = args.measure.split(",")
        print(json.dumps(measure(variant, args.batch, args.prompt, int(response))))
        return
    print(f"batch {args.batch}, prompt {args.prompt} tokens; one forward + backward, float32")
    print("response  variant         added peak MB   wall s")
    for response in args.response:
        got = {}
        for variant in ("full", "response-only", "checkpointed"):
            child = [sys.executable, __file__, "--batch", str(args.batch), "--prompt",
                     str(args.prompt), "--measure", f"{variant},{response}"]  # fmt: skip
            got[variant] = json.loads(
                subprocess.run(child, check=True, capture_output=True, text=True).stdout
            )
            m = got[variant]
            print(f"{response:<9d} {variant:15s} {m['added_mb']:13.0f}   {m['wall']:6.2f}")
        for variant in ("response-only", "checkpointed"):
            ratio = got[variant]["added_mb"] / got["full"]["added_mb"]
            print(f"{'':9s} {variant} / full: memory x{ratio:.2f}, time "
                  f"x{got[variant]['wall'] / got['full']['wall']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
