"""Judge prompts: Jinja templates rendered to chat messages, with untrusted text as data.

The built-in templates live in ``prompts/`` (shipped inside the wheel). Each renders a
system message (instructions, scale, output format) and a user message (the fenced
problem, reference and graded text, then a one-line reminder).

**Cache-friendly order.** The released ExpRL prompts put the problem, then the graded
reasoning, then the reference. Here the default (``order="cache"``) puts everything that
is shared first: instructions, problem, reference; then what varies: the rollout, the
step, or the prefix. A server with prefix caching (vLLM's is on by default) then
computes the shared part once for all rollouts of a prompt, and in prefix mode the
rollout's text up to step k is also shared by step k + 1. ``order="released"`` keeps
the released layout for comparison.

**Untrusted text is data.** Question, reference and rollout are passed to a sandboxed
Jinja environment (``StrictUndefined``) as variables: Jinja never parses a variable's
value, so ``{{ 7*7 }}`` in a rollout stays those characters. Each is fenced by
``[BEGIN LABEL tag]`` / ``[END LABEL tag]`` with ``tag`` a hash of the text, so a
rollout cannot close its own fence and pose as instructions; the parser ignores fenced
text the judge echoes back.

Custom templates are strings or files; they may ``{% extends "_base.jinja" %}``. A
template is identified by a content hash (:attr:`JudgeTemplate.id`), which the judge
cache keys on.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypedDict

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ConfigError, InputError

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "PREFIX_MODES",
    "TEMPLATES",
    "ChatMessage",
    "JudgeTemplate",
    "fence",
    "get_template",
    "load_template",
    "prompts_dir",
    "template_named",
]

Mode = Literal["outcome", "process-segment", "process-prefix", "process-growing", "process-tagged"]
Order = Literal["cache", "released"]
MODES: tuple[Mode, ...] = (
    "outcome", "process-segment", "process-prefix", "process-growing", "process-tagged"
)  # fmt: skip
# The commands' default (score, serve, audit on outcome labels) and the adapters': the
# cheapest mode, and the one every trainer's scalar reward takes as it is.
DEFAULT_MODE: Mode = "outcome"
# modes whose step score is the progress of the rollout so far (the last one is the whole's)
PREFIX_MODES: tuple[Mode, ...] = ("process-prefix", "process-growing", "process-tagged")


class ChatMessage(TypedDict):
    """One chat message, as the OpenAI API and ``vllm.LLM.chat`` take it."""

    role: str
    content: str


def prompts_dir() -> Path:
    """Return the folder of the built-in templates (in the wheel, or in a checkout)."""
    shipped = Path(str(importlib.resources.files("exprl_rewards"))) / "prompts"
    if (shipped / "_base.jinja").is_file():
        return shipped
    return Path(__file__).resolve().parents[2] / "prompts"


def fence(text: str, label: str, key: str | None = None) -> str:
    """Wrap untrusted ``text`` in BEGIN/END markers tagged by a hash of ``key`` (or ``text``).

    >>> fence("2 + 2 = 4", "STEP")
    '[BEGIN STEP e93dff0d]\\n2 + 2 = 4\\n[END STEP e93dff0d]'
    """
    tag = hashlib.sha256((text if key is None else key).encode()).hexdigest()[:8]
    return f"[BEGIN {label} {tag}]\n{text}\n[END {label} {tag}]"


@lru_cache(maxsize=8)
def _environment(folder: str) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.globals["fence"] = fence
    return env


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: Jinja source, what it grades, and its score scale.

    Args:
        source: Jinja source, rendered once per part with the variable ``part`` set to
            ``"system"``, ``"user"`` and ``"prefill"``; usually it extends
            ``"_base.jinja"`` and fills its blocks. A template that ignores ``part``
            gives a single user message.
        mode: one of :data:`MODES`.
        name: a label for logs; built-ins use their registry name.
        low, high: the integer score scale the template asks for (1-5 as released).
        score_only: True when the judge is told to answer with the score alone (for
            logprob scoring); the parser then also accepts a bare number.
        folder: where ``extends``/``include`` look; defaults to the built-in prompts.
    """

    source: str
    mode: Mode
    name: str = "custom"
    low: int = 1
    high: int = 5
    score_only: bool = False
    folder: Path = field(default_factory=prompts_dir)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        if not self.low < self.high:
            raise ConfigError(f"score scale must have low < high, got {self.low}-{self.high}")
        try:
            self._template()
        except jinja2.TemplateError as e:
            raise ConfigError(f"template {self.name!r} does not compile: {e}") from e

    def _template(self) -> jinja2.Template:
        return _environment(str(self.folder)).from_string(self.source)

    @property
    def id(self) -> str:
        """A content hash of the template and the partials it may include."""
        h = hashlib.sha256(self.source.encode())
        for partial in sorted(self.folder.glob("_*.jinja")):
            h.update(partial.read_bytes())
        h.update(f"{self.mode}:{self.low}-{self.high}:{self.score_only}".encode())
        return h.hexdigest()[:16]

    def render(
        self,
        *,
        question: str,
        reference: str,
        response: str,
        step: str = "",
        previous: str = "",
        step_index: int = 0,
        num_steps: int = 0,
        order: Order = "cache",
    ) -> list[ChatMessage]:
        """Render the system and user messages.

        Args:
            question, reference, response: the problem, the hidden reference, the rollout.
            step: process modes: the text of the step graded.
            previous: process-prefix mode: the rollout's text before ``step``.
            step_index, num_steps: 1-based step number and number of steps.
            order: ``"cache"`` (shared parts first) or ``"released"``.
        """
        values = {"question": question, "reference": reference, "response": response}
        values.update(step=step, previous=previous)
        for name, value in values.items():
            if not isinstance(value, str):
                raise InputError(
                    f"template variable {name!r} must be a str, got {type(value).__name__}"
                )
        if order not in ("cache", "released"):
            raise ConfigError(f"order must be 'cache' or 'released', got {order!r}")
        template = self._template()
        context = {**values, "step_index": step_index, "num_steps": num_steps, "order": order}
        try:
            system = template.render(context, part="system").strip()
            user = template.render(context, part="user").strip()
        except jinja2.TemplateError as e:
            raise ConfigError(f"template {self.name!r} failed to render: {e}") from e
        messages: list[ChatMessage] = []
        # A template that ignores `part` renders the same text twice: a user message only.
        if system and system != user:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return messages

    def turn(self, *, step: str, response: str, step_index: int, num_steps: int) -> ChatMessage:
        """process-growing: the user turn that adds step ``step_index`` to the judge's
        conversation (the template's ``part == "turn"``)."""
        for name, value in (("step", step), ("response", response)):
            if not isinstance(value, str):
                raise InputError(
                    f"template variable {name!r} must be a str, got {type(value).__name__}"
                )
        empty = dict.fromkeys(("question", "reference", "previous"), "")
        context = {**empty, "step": step, "response": response, "step_index": step_index,
                   "num_steps": num_steps, "order": "cache"}  # fmt: skip
        try:
            text = self._template().render(context, part="turn").strip()
        except jinja2.TemplateError as e:
            raise ConfigError(f"template {self.name!r} failed to render a turn: {e}") from e
        return {"role": "user", "content": text}

    def prefill(self) -> str:
        """The text that starts the judge's answer (``"Score: "`` for score-only), or ``""``."""
        empty = dict.fromkeys(("question", "reference", "response", "step", "previous"), "")
        template = self._template()
        common = {**empty, "step_index": 0, "num_steps": 0, "order": "cache"}
        prefill = template.render(common, part="prefill")
        return "" if prefill == template.render(common, part="user") else prefill


TEMPLATES: dict[str, tuple[str, Mode, bool]] = {
    "outcome": ("outcome.jinja", "outcome", False),
    "outcome-score-only": ("outcome_score_only.jinja", "outcome", True),
    "process-segment": ("process_segment.jinja", "process-segment", False),
    "process-segment-score-only": ("process_segment_score_only.jinja", "process-segment", True),
    "process-prefix": ("process_prefix.jinja", "process-prefix", False),
    "process-prefix-score-only": ("process_prefix_score_only.jinja", "process-prefix", True),
    # other domains the paper trains on, and proofs (graded as prefixes, as released)
    "code-outcome": ("code_outcome.jinja", "outcome", False),
    "code-outcome-score-only": ("code_outcome_score_only.jinja", "outcome", True),
    "science-outcome": ("science_outcome.jinja", "outcome", False),
    "science-outcome-score-only": ("science_outcome_score_only.jinja", "outcome", True),
    "proof-prefix": ("proof_prefix.jinja", "process-prefix", False),
    "proof-prefix-score-only": ("proof_prefix_score_only.jinja", "process-prefix", True),
    # one conversation per rollout, a step a turn: score-only by design
    "process-growing": ("process_growing_score_only.jinja", "process-growing", True),
    "process-growing-score-only": ("process_growing_score_only.jinja", "process-growing", True),
    # every step in one request, one digit per step back: score-only by design
    "process-tagged": ("process_tagged_score_only.jinja", "process-tagged", True),
    "process-tagged-score-only": ("process_tagged_score_only.jinja", "process-tagged", True),
}


def get_template(name: str) -> JudgeTemplate:
    """Return the built-in template ``name`` (a key of :data:`TEMPLATES`).

    >>> get_template("outcome").mode, get_template("outcome-score-only").score_only
    ('outcome', True)
    """
    try:
        filename, mode, score_only = TEMPLATES[name]
    except KeyError:
        known = ", ".join(TEMPLATES)
        raise ConfigError(f"unknown template {name!r}; known templates: {known}") from None
    source = (prompts_dir() / filename).read_text(encoding="utf-8")
    return JudgeTemplate(source, mode, name=name, score_only=score_only)


def template_named(name: str, *, mode: Mode, score_only: bool = False) -> str | JudgeTemplate:
    """A built-in template's name as it is, or the template in the file ``name``.

    Raises:
        ConfigError: neither, with the closest built-in names and the full list.

    >>> template_named("outcome-score-only", mode="outcome")
    'outcome-score-only'
    """
    if name in TEMPLATES:
        return name
    if Path(name).is_file():
        return load_template(Path(name), mode=mode, score_only=score_only)
    close = difflib.get_close_matches(name, TEMPLATES, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ConfigError(
        f"template {name!r} is neither a built-in nor a file; {hint}built-in templates:"
        f" {', '.join(TEMPLATES)}"
    )


def load_template(
    path_or_source: str | Path,
    *,
    mode: Mode,
    low: int = 1,
    high: int = 5,
    score_only: bool = False,
) -> JudgeTemplate:
    """Load a custom template from a ``.jinja`` file or a source string.

    A :class:`~pathlib.Path`, or a string ending in ``.jinja`` that names an existing
    file, is read; any other string is the template source itself.
    """
    text = str(path_or_source)
    as_file = isinstance(path_or_source, Path) or (text.endswith(".jinja") and Path(text).is_file())
    if as_file:
        path = Path(path_or_source)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read template {path}: {e}") from e
        return JudgeTemplate(
            source, mode, name=path.name, low=low, high=high, score_only=score_only
        )
    return JudgeTemplate(text, mode, low=low, high=high, score_only=score_only)
