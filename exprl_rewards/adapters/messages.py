"""What the policy produced, as the text the judge grades: chat messages rendered.

Trainers hand a completion over as a string, or as the chat messages the policy
produced after the prompt: assistant turns (with ``reasoning_content``, content parts
and ``tool_calls``), the tool results the trainer fed back, and in multi-turn
environments further user turns. :func:`render_messages` writes them in order, one
block per item, in this documented format::

    <the assistant's reasoning (reasoning_content / reasoning), as written>
    <the assistant's content: a string, or its text parts joined; other parts: [image]>
    [tool call] get_weather({"city": "Paris"})
    [tool result get_weather] 22 C
    [user] <a later user turn>

Blocks are separated by a blank line. Nothing is dropped: earlier turns, reasoning and
tool traffic are all part of the attempt the judge compares with the reference.
:func:`ends_in_tool_call` says whether the last turn is a tool call still waiting for
its result (the trainer stopped the episode before the policy answered).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError

__all__ = ["ends_in_tool_call", "prompt_question", "render_messages"]


def _content(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, Mapping):
                parts.append(f"[{part.get('type', 'part')}]")
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise InputError(f"{where}: a content part is {type(part).__name__}: {part!r:.80}")
        return "".join(parts)
    raise InputError(f"{where}: content is {type(content).__name__}: {content!r:.80}")


def _tool_call(call: Any, where: str) -> str:
    function = call.get("function", call) if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InputError(f"{where}: a tool call without a function name: {call!r:.80}")
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
    return f"[tool call] {function['name']}({arguments})"


def _blocks(message: Mapping[str, Any], where: str) -> list[str]:
    role = message.get("role")
    content = _content(message.get("content"), where)
    if role == "tool":
        name = message.get("name")
        return [f"[tool result{' ' + name if isinstance(name, str) else ''}] {content}"]
    if role in ("user", "system"):
        return [f"[{role}] {content}"]
    if role != "assistant":
        raise InputError(f"{where}: unknown role {role!r}")
    blocks = []
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning.strip():
            blocks.append(reasoning)
            break
    if content.strip():
        blocks.append(content)
    blocks.extend(_tool_call(call, where) for call in message.get("tool_calls") or ())
    return blocks


def render_messages(completion: str | Sequence[Mapping[str, Any]], where: str = "") -> str:
    """The text the judge grades for a completion (see the module docs).

    >>> render_messages([
    ...     {"role": "assistant", "content": None,
    ...      "tool_calls": [{"function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
    ...     {"role": "tool", "name": "add", "content": "4"},
    ...     {"role": "assistant", "reasoning_content": "2 + 2 is 4.", "content": "4"},
    ... ])
    '[tool call] add({"a": 2, "b": 2})\\n\\n[tool result add] 4\\n\\n2 + 2 is 4.\\n\\n4'
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence):
        raise InputError(f"{where}: expected a string or chat messages, got {completion!r:.80}")
    blocks: list[str] = []
    for i, message in enumerate(completion):
        if not isinstance(message, Mapping):
            raise InputError(f"{where}: message {i} is not a mapping: {message!r:.80}")
        blocks.extend(_blocks(message, f"{where} message {i}".strip()))
    return "\n\n".join(blocks)


def ends_in_tool_call(completion: str | Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last message is an assistant tool call with no answer after it.

    >>> ends_in_tool_call([{"role": "assistant", "content": "", "tool_calls": [{}]}])
    True
    """
    if isinstance(completion, str) or not completion:
        return False
    last = completion[-1]
    return (
        isinstance(last, Mapping)
        and last.get("role") == "assistant"
        and bool(last.get("tool_calls"))
        and not _content(last.get("content"), "").strip()
    )


def prompt_question(prompt: Any, where: str = "prompt") -> str:
    """The question in a prompt: the prompt itself when it is text, else the content of
    the last user message of a conversation (text parts joined).

    >>> prompt_question([{"role": "system", "content": "Be brief."},
    ...                  {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}])
    '2+2?'
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if users:
            return _content(users[-1].get("content"), where)
    raise InputError(f"{where}: cannot find the question in the prompt {prompt!r:.80}")
