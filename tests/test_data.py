"""The data shipped in data/: every file the MANIFEST lists is there, byte for byte, with
its record count; nothing in the project reads a folder outside the repository."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from conftest import ROOT

DATA = ROOT / "data"
BLOCK = re.compile(
    r"^== (?P<path>\S+)\n\s+size: (?P<size>\d+) bytes\s+sha256: (?P<sha>[0-9a-f]{64})\n"
    r"(?:.*\n)*?\s+records: (?P<records>\d+)",
    re.M,
)
MANIFEST = list(BLOCK.finditer((DATA / "MANIFEST.md").read_text(encoding="utf-8")))


def test_the_manifest_lists_every_data_file() -> None:
    listed = {m["path"] for m in MANIFEST}
    present = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file()}
    assert listed == present - {"MANIFEST.md"}


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["path"] for m in MANIFEST])
def test_each_file_matches_its_manifest_entry(entry: re.Match[str]) -> None:
    data = (DATA / entry["path"]).read_bytes()
    assert len(data) == int(entry["size"])
    assert hashlib.sha256(data).hexdigest() == entry["sha"]
    if entry["path"].endswith(".jsonl"):
        records = sum(1 for line in data.splitlines() if line.strip())
    else:
        records = len(json.loads(data))
    assert records == int(entry["records"])


def test_nothing_reads_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|parents?\[\d\] / \"shared\"|parent / \"shared\"")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("exprl_rewards", "tests", "benchmarks", "examples")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "test_data.py" and outside.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_without_a_checkout_the_audit_says_where_the_data_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exprl_rewards.audit import datasets
    from exprl_rewards.errors import InputError

    assert datasets.default_data_dir() == DATA  # a checkout finds its own data/
    monkeypatch.setenv("EXPRL_DATA", str(DATA))
    assert len(datasets.load_dataset("gsm8k-solutions")) == 1319 * 4
    monkeypatch.delenv("EXPRL_DATA")
    monkeypatch.setattr(datasets, "default_data_dir", lambda: None)  # as from a wheel
    with pytest.raises(InputError, match=r"not in the wheel.*--data-dir.*EXPRL_DATA"):
        datasets.load_dataset("gsm8k-solutions")
