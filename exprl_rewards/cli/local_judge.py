"""``python -m exprl_rewards.local_judge``: the embedded judge as an OpenAI-compatible
server on 127.0.0.1, for trying the adapters and the reward server on a CPU."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ExpRLError
from ..judges.local_model import VLLMServer
from .parser import ExpRLParser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exprl_rewards.local_judge``: serve the embedded judge over HTTP.

    The judge server for trying the library on a CPU (the adapters, ``score --base-url``,
    the reward server): vLLM's OpenAI-compatible server with the embedded model, until
    Ctrl-C. Any other server works the same way (``vllm serve MODEL`` on a GPU).
    """
    p = ExpRLParser(
        prog="python -m exprl_rewards.local_judge",
        description="Serve the embedded judge (SmolLM2-135M-Instruct on vLLM's CPU build) as"
        " an OpenAI-compatible server on 127.0.0.1, until interrupted.",
    )
    p.add_argument("--port", type=int, default=8000, help="the port")
    p.add_argument("--name", default="judge", help="the served model name (--model)")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length")
    p.add_argument("--log", type=Path, help="the server's log (default: a temporary file)")
    args = p.parse_args(argv)
    server = VLLMServer(name=args.name, port=args.port, max_model_len=args.max_model_len,
                        log_path=args.log)  # fmt: skip
    print(f"starting the judge (about a minute on a CPU); log: {server.log_path}", file=sys.stderr)
    try:
        with server:
            print(f"judge ready: --base-url {server.url} --model {server.model}", flush=True)
            server.wait()
    except KeyboardInterrupt:
        return 130
    except ExpRLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
