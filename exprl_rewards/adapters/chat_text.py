"""A policy's chat-templated text, back to the question and the answer a judge should see.

OpenRLHF sends the reward server ``decode(prompt_ids + action_ids,
skip_special_tokens=False)``: the policy's chat template (system prompt, role headers,
``<|im_start|>``) around the question, and the response with its end-of-turn token. A
judge handed that text verbatim sees another model's special tokens, which its own
tokenizer may turn into real control tokens that break its turn structure. The rule:

- **question** (:func:`question_from_prompt`): the content of the *last user turn* of a
  ChatML (``<|im_start|>user ... <|im_end|>``), Llama 3 (``<|start_header_id|>user
  <|end_header_id|> ... <|eot_id|>``), Gemma (``<start_of_turn>user ...
  <end_of_turn>``) or Mistral (``[INST] ... [/INST]``) prompt; a prompt in none of these
  is taken whole, with special tokens removed;
- **response** (:func:`clean_response`): special tokens removed, where a special token
  is ``<|...|>``, ``<s>``, ``</s>``, ``<start_of_turn>``/``<end_of_turn>``, ``<eos>``
  and ``<bos>``; the text between them is kept as it is (a ``<think>`` block too).

Both strip surrounding whitespace. A label that carries the question itself (a JSON
object with ``question``) is always better than recovering it from the prompt.
"""

from __future__ import annotations

import re

__all__ = ["clean_response", "question_from_prompt"]

_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|<eos>|<bos>")
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|\Z)", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|\Z)", re.S),
    re.compile(r"<start_of_turn>user\s*\n(.*?)(?:<end_of_turn>|\Z)", re.S),
    re.compile(r"\[INST\](.*?)(?:\[/INST\]|\Z)", re.S),
)


def clean_response(text: str) -> str:
    """The response without the policy's special tokens.

    >>> clean_response(" The answer is 4.<|im_end|><|endoftext|>")
    'The answer is 4.'
    """
    return _SPECIAL.sub("", text).strip()


def question_from_prompt(prompt: str) -> str:
    """The last user turn of a chat-templated prompt, or the whole prompt, cleaned.

    >>> question_from_prompt(
    ...     "<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nWhat is 2+2?"
    ...     "<|im_end|>\\n<|im_start|>assistant\\n")
    'What is 2+2?'
    """
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return clean_response(turns[-1])
    return clean_response(prompt)
