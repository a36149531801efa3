"""The data model: rollouts, segments and scores check themselves."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from exprl_rewards import InputError, Rollout, Score, Segment, scores_to_array


def make(**kw: object) -> Rollout:
    base: dict[str, object] = {
        "id": "r",
        "group_id": "g",
        "question": "q",
        "reference": "ref",
        "response": "abc",
    }
    base.update(kw)
    return Rollout(**base)  # type: ignore[arg-type]


def test_rollout_normalises_token_lists_to_tuples_and_pickles() -> None:
    r = make(token_ids=[1, 2], token_offsets=[[0, 1], [1, 3]], metadata={"k": 1})
    assert r.token_ids == (1, 2)
    assert r.token_offsets == ((0, 1), (1, 3))
    assert pickle.loads(pickle.dumps(r)) == r


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"response": 3}, "field 'response' must be a str"),
        ({"token_offsets": [(0, 4)]}, r"token_offsets\[0\] = \(0, 4\)"),
        ({"token_offsets": [(2, 3), (1, 2)]}, "offsets must be in text order"),
        ({"token_offsets": [(1, 0)]}, "need 0 <= start <= end"),
        ({"token_ids": [1], "token_offsets": [(0, 1), (1, 2)]}, "1 token_ids but 2 token_offsets"),
    ],
)
def test_rollout_rejects_bad_fields_with_a_message_naming_them(
    kw: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message) as e:
        make(**kw)
    assert "rollout 'r'" in str(e.value)


def test_segment_checks_its_span() -> None:
    assert Segment(0, 2, 4, "ab").text == "ab"
    with pytest.raises(InputError, match="does not match"):
        Segment(0, 2, 5, "ab")


def test_score_distinguishes_zero_from_unscored() -> None:
    zero, missing = Score(0.0), Score.unscored("parse: no score line")
    assert zero.scored
    assert zero.value == 0.0
    assert not missing.scored
    assert missing.reason == "parse: no score line"
    arr = scores_to_array([zero, missing, None, 0.5])
    assert arr[0] == 0.0
    assert math.isnan(arr[1])
    assert math.isnan(arr[2])
    assert arr[3] == 0.5


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (None, None, "needs a reason"),
        (None, "", "needs a reason"),
        (0.5, "timeout", "cannot have a reason"),
        (math.nan, None, "must be finite"),
        (math.inf, None, "must be finite"),
    ],
)
def test_score_rejects_inconsistent_values(
    value: float | None, reason: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        Score(value, reason)


def test_scores_to_array_of_nothing_is_empty_float() -> None:
    arr = scores_to_array([])
    assert arr.dtype == np.float64
    assert arr.shape == (0,)
