"""token_offsets: ids back to text and offsets, on the real SmolLM2 tokenizer.

The byte-level path must agree with the two slower exact paths on every text, real
traces and hypothesis' unicode alike; a tokenizer it does not understand must fall
through to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exprl_rewards.adapters.offsets import (
    _byte_table,
    _prefix_offsets,
    _window_offsets,
    token_offsets,
)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from exprl_rewards.judges.local_model import default_model_dir

    return AutoTokenizer.from_pretrained(default_model_dir())


def slow_paths(tokenizer: Any, ids: list[int]) -> tuple[list[tuple[int, int]], ...]:
    backend = tokenizer.backend_tokenizer
    return _window_offsets(backend, backend.decode, ids, 8), _prefix_offsets(backend.decode, ids)


def test_smollm2_takes_the_byte_level_path(tokenizer: Any) -> None:
    table = _byte_table(tokenizer.backend_tokenizer)
    assert table is not None
    pieces, lengths = table
    assert pieces[tokenizer.convert_tokens_to_ids("Ġthe")] == b" the"
    assert pieces[tokenizer.eos_token_id] == b""  # special: skipped, as decode() does
    assert len(pieces) == len(lengths) == len(tokenizer)


def test_real_traces_agree_with_the_slow_paths(tokenizer: Any) -> None:
    with (DATA / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl").open() as f:
        texts = [json.loads(line)["response"][0] for line, _ in zip(f, range(40), strict=False)]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        decoded, offsets = token_offsets(tokenizer, ids)
        assert decoded == text
        window, prefix = slow_paths(tokenizer, ids)
        assert offsets == window == prefix
        assert offsets[-1][0] == offsets[-1][1] == len(text)  # EOS: an empty span at the end


@settings(max_examples=150, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffd"), max_size=60)
)
def test_any_text_agrees_with_decoding_every_prefix(tokenizer: Any, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = token_offsets(tokenizer, ids)
    assert decoded == tokenizer.backend_tokenizer.decode(ids)
    assert "".join(decoded[s:e] for s, e in offsets) == decoded
    assert offsets == _prefix_offsets(tokenizer.backend_tokenizer.decode, ids)


def test_a_character_cut_between_tokens_lands_on_the_token_that_completes_it(
    tokenizer: Any,
) -> None:
    ids = tokenizer("a😀", add_special_tokens=False)["input_ids"]
    assert len(ids) > 2  # the emoji is several byte tokens
    text, offsets = token_offsets(tokenizer, ids)
    assert text == "a😀"
    assert offsets[0] == (0, 1)
    assert offsets[-1] == (1, 2)
    assert all(s == e for s, e in offsets[1:-1])
    # cut mid-character: decode() writes U+FFFD, which the byte path cannot map; the
    # slower paths still give covering offsets
    text, offsets = token_offsets(tokenizer, ids[:-1])
    assert "\ufffd" in text
    assert "".join(text[s:e] for s, e in offsets) == text


def test_plain_decode_callable_without_a_backend() -> None:
    vocab = {0: "ab", 1: "c", 2: ""}
    text, offsets = token_offsets(lambda ids: "".join(vocab[i] for i in ids), [0, 2, 1])
    assert text == "abc"
    assert offsets == [(0, 2), (2, 2), (2, 3)]


def released_step_ends(tokenizer: Any, ids: list[int], marker: str = "###") -> list[int]:
    """The released _find_step_spans, written out: at every token decode the last 10 tokens;
    a step ends at a token where that window's text ends with the marker."""
    return [
        t for t in range(len(ids)) if tokenizer.decode(ids[max(0, t - 9) : t + 1]).endswith(marker)
    ]


@pytest.mark.parametrize(
    "text",
    [
        "### Step 1: add.\n2 + 3 = 5.\n### Step 2: double.\n5 * 2 = 10.\n### Answer\n\\boxed{10}",
        "First: 12 apples ###\nThen: eat 3 ### 9 left.#### 9",
        "x ###### y ### z ##",
        "Step one ###### Step two.",
    ],
)
def test_token_marker_slicer_cuts_where_the_released_code_does(tokenizer: Any, text: str) -> None:
    from exprl_rewards.text.slicers import TokenMarkerSlicer, get_slicer

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = token_offsets(tokenizer, ids)
    assert decoded == text
    released = [
        offsets[t][1] for t in released_step_ends(tokenizer, ids) if offsets[t][1] < len(text)
    ]
    segments = TokenMarkerSlicer().split_tokens(text, offsets)
    assert [s.end for s in segments[:-1]] == released
    assert "".join(s.text for s in segments) == text
    if text.startswith("x ######"):  # tokens 'x', ' ####', '##', ' y', ' ###', ...
        assert released == [6, 8, 14]
        assert [s.end for s in get_slicer("exprl").split(text)[:-1]] == [5, 8, 14]
