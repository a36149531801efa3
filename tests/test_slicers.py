"""Slicers: exact spans on arbitrary text (hypothesis) and on real traces (golden)."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exprl_rewards import PRESETS, ConfigError, RegexSlicer, delimiter_slicer, get_slicer
from exprl_rewards.text.rollout import Segment

from conftest import read_jsonl

FRAGMENTS = [
    "###",
    "\n\n",
    "\n",
    " ",
    "\t",
    "Step 1:",
    "**Step 2.**",
    "## ",
    "x",
    "é",
    "🙂",
    "\u2028",
]
texts = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(FRAGMENTS)), max_size=30).map(
    "".join
)
slicers = st.builds(
    lambda base, cut, ws, min_chars, max_segments: RegexSlicer(
        base.pattern,
        cut=cut,
        whitespace=ws,
        min_chars=min_chars,
        max_segments=max_segments,
        flags=base.flags,
    ),
    st.sampled_from([*PRESETS.values(), delimiter_slicer("é"), RegexSlicer(r"(?=x)")]),
    st.sampled_from(["after", "before"]),
    st.sampled_from(["keep", "attach"]),
    st.integers(0, 6),
    st.none() | st.integers(1, 5),
)


def assert_exact_cover(text: str, segments: tuple[Segment, ...]) -> None:
    assert "".join(s.text for s in segments) == text
    assert [s.index for s in segments] == list(range(len(segments)))
    position = 0
    for s in segments:
        assert s.start == position < s.end  # contiguous, non-empty
        assert text[s.start : s.end] == s.text
        position = s.end
    assert position == len(text)
    assert bool(segments) == bool(text)


@settings(max_examples=400)
@given(slicer=slicers, text=texts)
@example(slicer=get_slicer("blank-line"), text="a\n\n ")  # a cut moved onto the end
@example(slicer=get_slicer("blank-line"), text=" \n\na")  # whitespace-only first piece
@example(slicer=get_slicer("step-heading", min_chars=3), text="Step 1\nStep 2 abc")
def test_segments_cover_the_text_exactly(slicer: RegexSlicer, text: str) -> None:
    segments = slicer.split(text)
    assert_exact_cover(text, segments)
    if slicer.max_segments is not None:
        assert len(segments) <= slicer.max_segments
    if len(segments) > 1:
        visible = [sum(not c.isspace() for c in s.text) for s in segments]
        assert min(visible) >= slicer.min_chars
        if slicer.whitespace == "attach":
            assert all(not s.text[0].isspace() for s in segments[1:])
            assert all(not s.text.isspace() for s in segments)


@given(text=st.text())
def test_arbitrary_unicode_round_trips_through_every_preset(text: str) -> None:
    for slicer in PRESETS.values():
        assert_exact_cover(text, slicer.split(text))


@given(text=texts)
def test_plain_slicer_cuts_exactly_at_the_matches(text: str) -> None:
    for cut in ("after", "before"):
        slicer = RegexSlicer(r"###|\n\n", cut=cut, whitespace="keep")
        expected = sorted(
            {m.end() if cut == "after" else m.start() for m in re.finditer(r"###|\n\n", text)}
            - {0, len(text)}
        )
        assert slicer.cuts(text) == expected


@pytest.mark.parametrize(
    ("slicer", "text", "expected"),
    [
        (
            get_slicer("exprl"),
            "### Step 1\nx\n### Step 2\ny",
            ["###", " Step 1\nx\n###", " Step 2\ny"],
        ),
        (get_slicer("exprl"), "a ### b ###", ["a ###", " b ###"]),
        (get_slicer("exprl"), "no marker", ["no marker"]),
        (get_slicer("exprl"), "", []),
        (get_slicer("blank-line"), "\n\nA\n\n\n\nB\n\n", ["\n\nA\n\n\n\n", "B\n\n"]),
        (get_slicer("blank-line", whitespace="keep"), "A\n\n\n\nB", ["A\n\n", "\n\n", "B"]),
        (get_slicer("newline"), "a\n \nb", ["a\n \n", "b"]),
        (get_slicer("newline"), "a\n \t", ["a\n \t"]),
        (get_slicer("newline"), " \n\nb\n", [" \n\nb\n"]),
        (
            get_slicer("step-heading"),
            "Intro\n**Step 1:** x\nStep 2: y\n## Step 3. z",
            ["Intro\n", "**Step 1:** x\n", "Step 2: y\n", "## Step 3. z"],
        ),
        (get_slicer("step-heading"), "Steps 1 and 2 are easy", ["Steps 1 and 2 are easy"]),
        (get_slicer("markdown-heading"), "# A\ntext\n## B\nmore", ["# A\ntext\n", "## B\nmore"]),
        (
            get_slicer("blank-line", min_chars=3),
            "Hello\n\nab\n\ncd\n\nworld",
            ["Hello\n\nab\n\ncd\n\n", "world"],
        ),
        (
            get_slicer("blank-line", min_chars=3),
            "a\n\nb\n\ncd\n\nworld",
            ["a\n\nb\n\ncd\n\n", "world"],
        ),
        (get_slicer("blank-line", min_chars=99), "a\n\nb", ["a\n\nb"]),
        (get_slicer("newline", max_segments=2), "a\nb\nc\nd", ["a\n", "b\nc\nd"]),
        (get_slicer("newline", max_segments=1), "a\nb", ["a\nb"]),
        (delimiter_slicer("---", cut="before"), "a---b---c", ["a", "---b", "---c"]),
    ],
)
def test_golden_hand_cases(slicer: RegexSlicer, text: str, expected: list[str]) -> None:
    assert [s.text for s in slicer.split(text)] == expected


def test_slicers_are_picklable_and_comparable() -> None:
    slicer = get_slicer("step-heading", min_chars=5)
    clone = pickle.loads(pickle.dumps(slicer))
    assert clone == slicer
    assert clone.split("Step 1: abcdef\nStep 2: ghijkl") == slicer.split(
        "Step 1: abcdef\nStep 2: ghijkl"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: get_slicer("paragraph"),
            "unknown slicer 'paragraph'; known: blank-line, exprl",
        ),
        (lambda: get_slicer("exprl", min_char=3), "bad option for slicer 'exprl'"),
        (lambda: RegexSlicer("(", cut="after"), "invalid slicer pattern"),
        (lambda: RegexSlicer("x", cut="middle"), "cut must be"),  # type: ignore[arg-type]
        (lambda: RegexSlicer("x", whitespace="strip"), "whitespace must be"),  # type: ignore[arg-type]
        (lambda: RegexSlicer("x", min_chars=-1), "min_chars must be >= 0"),
        (lambda: RegexSlicer("x", max_segments=0), "max_segments must be >= 1"),
        (lambda: delimiter_slicer(""), "non-empty"),
    ],
)
def test_bad_options_raise_config_errors(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        call()  # type: ignore[operator]


# Golden tests on real traces -------------------------------------------------------


@pytest.mark.parametrize("split", ["gsm8k", "math"])
def test_processbench_steps_joined_by_blank_lines_come_back_step_by_step(
    data_dir: Path, split: str
) -> None:
    records = json.loads((data_dir / "step_labels" / "processbench" / f"{split}.json").read_text())
    assert len(records) == {"gsm8k": 400, "math": 1000}[split]
    slicer = get_slicer("blank-line")
    for record in records:
        text = "\n\n".join(record["steps"])
        segments = slicer.split(text)
        assert_exact_cover(text, segments)
        assert [s.text.strip() for s in segments] == [s.strip() for s in record["steps"]], record[
            "id"
        ]
        # The labelled first wrong step is addressable by segment index.
        assert record["label"] < len(segments)


def test_processbench_first_record_golden(data_dir: Path) -> None:
    record = json.loads((data_dir / "step_labels" / "processbench" / "math.json").read_text())[0]
    segments = get_slicer("blank-line").split("\n\n".join(record["steps"]))
    assert [(s.start, s.end) for s in segments] == [(0, 199), (199, 341)]
    assert segments[1].text.startswith("Since we're looking for the remainder (mod 11)")


def test_gsm8k_model_solutions_and_references_slice_into_their_lines(data_dir: Path) -> None:
    slicer = get_slicer("newline")
    n = 0
    for row in read_jsonl(data_dir / "outcome_labels" / "gsm8k_example_model_solutions.jsonl"):
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            text = row[key]["solution"]
            segments = slicer.split(text)
            assert_exact_cover(text, segments)
            lines = [line.strip() for line in text.split("\n") if line.strip()]
            assert [s.text.strip() for s in segments] == lines
            n += 1
    assert n == 5276
    for row in read_jsonl(data_dir / "references" / "gsm8k_test.jsonl"):
        segments = slicer.split(row["answer"])
        assert segments[-1].text.startswith("#### ")  # the final answer is its own step


def test_math500_solutions_slice_like_str_split_on_blank_lines(data_dir: Path) -> None:
    slicer = get_slicer("blank-line")
    rows = read_jsonl(data_dir / "references" / "math500_test.jsonl")
    assert len(rows) == 500
    multi = 0
    for row in rows:
        text = row["solution"]
        segments = slicer.split(text)
        assert_exact_cover(text, segments)
        expected = [p.strip() for p in text.split("\n\n") if p.strip()]
        assert [s.text.strip() for s in segments] == expected
        multi += len(segments) > 1
    assert multi == 151  # solutions with a blank line in them


def test_step_headings_in_real_qwen_rollouts_number_the_segments(data_dir: Path) -> None:
    slicer = get_slicer("step-heading")
    heading = re.compile(r"^\W*step\s*(\d+)", re.I)
    found = 0
    for row in read_jsonl(data_dir / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl"):
        for text in row["code"]:
            if not re.search(r"(?im)^\W*step\s*\d", text):
                continue
            found += 1
            segments = slicer.split(text)
            assert_exact_cover(text, segments)
            numbers = [m.group(1) if (m := heading.match(s.text)) else None for s in segments]
            assert numbers[0] is None  # a preamble before Step 1
            assert numbers[1:] == [str(k) for k in range(1, len(segments))]
    assert found == 26


def test_released_delimiter_on_real_rollouts_that_use_it(data_dir: Path) -> None:
    slicer = get_slicer("exprl")
    found = 0
    for row in read_jsonl(data_dir / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl"):
        for text in row["code"]:
            if "###" not in text:
                continue
            found += 1
            segments = slicer.split(text)
            assert_exact_cover(text, segments)
            assert len(segments) == text.count("###") + (not text.endswith("###"))
            assert all(s.text.endswith("###") for s in segments[:-1])
    assert found == 5


def test_bigbench_mistake_steps_joined_by_newlines(data_dir: Path) -> None:
    slicer = get_slicer("newline")
    for row in read_jsonl(data_dir / "step_labels" / "bigbench_mistake_multistep_arithmetic.jsonl"):
        segments = slicer.split("\n".join(row["steps"]))
        assert [s.text.strip() for s in segments] == [s.strip() for s in row["steps"]]
        if row["mistake_index"] is not None:
            assert row["mistake_index"] < len(segments)
