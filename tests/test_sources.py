"""Inputs beyond one JSONL file: folders, compressed files, Parquet, and S3.

The S3 store is moto's server, a real S3-compatible HTTP server on 127.0.0.1, read by
pyarrow's S3 client (the one Ray Data uses); the judge is the fault server's
deterministic one, over real HTTP.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.score import main
from exprl_rewards.io.jsonl import read_rollouts

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

JUDGE = ["--model", "marks", "--no-cache", "--top-logprobs", "0", "--progress", "off"]


def row(rid: str, group: str, mark: int, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "group_id": group, "question": "Q?", "reference": "R.",
            "response": f"answer [[score {mark}]]", **extra}  # fmt: skip


def jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def lay_out(folder: Path) -> Path:
    """A folder of shards as data pipelines write them, with files that are not data."""
    (folder / "step-2").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(jsonl([row("a1", "g1", 1), row("a2", "g1", 3)]))
    (folder / "step-2" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl([row("b1", "g2", 5)])))
    (folder / "step-2" / "c.jsonl.bz2").write_bytes(bz2.compress(jsonl([row("c1", "g2", 2)])))
    with pa.CompressedOutputStream(str(folder / "step-2" / "d.jsonl.zst"), "zstd") as f:
        f.write(jsonl([row("d1", "g3", 4)]))
    with pa.CompressedOutputStream(str(folder / "step-2" / "e.jsonl.lz4"), "lz4") as f:
        f.write(jsonl([row("e1", "g3", 2)]))
    (folder / "_SUCCESS").write_text("")
    (folder / ".a.jsonl.crc").write_text("not data")
    (folder / "notes.txt").write_text("not data")
    return folder


def outputs(path: Path) -> list[tuple[str, float, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["id"], r["exprl"]["raw"], round(r["exprl"]["advantage"], 6)) for r in rows]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def run(server: FaultServer, *args: str) -> int:
    return main([*args, "--base-url", server.url, *JUDGE, "--mode", "outcome"])


def test_a_folder_of_plain_and_compressed_shards_is_read_in_path_order(
    server: FaultServer, tmp_path: Path
) -> None:
    folder = lay_out(tmp_path / "rollouts")
    out = tmp_path / "out.jsonl"
    assert run(server, str(folder), "-o", str(out)) == 0
    got = outputs(out)
    assert [r[:2] for r in got] == [("a1", 1.0), ("a2", 3.0), ("b1", 5.0), ("c1", 2.0),
                                    ("d1", 4.0), ("e1", 2.0)]  # fmt: skip
    want = [-0.7071, 0.7071, 0.7071, -0.7071, 0.7071, -0.7071]
    assert [r[2] for r in got] == pytest.approx(want, abs=1e-4)
    assert run(server, str(folder), "-o", str(out)) == 0  # a rerun resumes: nothing twice
    assert len(outputs(out)) == 6


def test_errors_name_the_shard_and_its_decompressed_line(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(jsonl([row("r1", "g", 1), {"group_id": "g"}]))
    bad = jsonl([row("r2", "g", 2), "{oops", row("r1", "g", 3), {"question": "Q?",
                 "reference": "R.", "response": "no id"}])  # fmt: skip
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(bad))
    before = server.requests
    assert run(server, str(folder), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert f"{folder}/a.jsonl:2: field 'question': missing" in err
    assert f"{folder}/b.jsonl.gz:2: not valid JSON" in err
    assert (
        f"{folder}/b.jsonl.gz:3: field 'id': duplicate id 'r1' (first on {folder}/a.jsonl:1)" in err
    )
    assert server.requests == before  # no judge call
    rows, _ = read_rollouts(str(folder))
    assert [r.rollout.id for r in rows] == ["r1", "r2", "b.jsonl.gz:L4"]  # ids unique per shard
    assert [r.path for r in rows] == [f"{folder}/a.jsonl", *[f"{folder}/b.jsonl.gz"] * 2]


def test_an_output_inside_the_input_folder_is_refused_before_anything_is_written(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = lay_out(tmp_path / "rollouts")
    before = sorted(p.name for p in folder.rglob("*"))
    assert run(server, str(folder), "-o", str(folder / "scored.jsonl")) == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_parquet_rows_with_nested_columns_and_values_json_cannot_hold(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verl_rows = [  # the layout of verl's data preprocessing, plus a response column
        {"prompt": [{"role": "user", "content": "Q?"}], "reward_model": {"ground_truth": "R."},
         "extra_info": {"index": i}, "uid": "q1", "response": f"step [[score {m}]]"}
        for i, m in enumerate([2, 4])
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(verl_rows), tmp_path / "verl.parquet")
    out = tmp_path / "out.jsonl"
    fields = ["--question-field", "prompt.0.content", "--reference-field",
              "reward_model.ground_truth", "--id-field", "extra_info.index",
              "--group-id-field", "uid"]  # fmt: skip
    assert run(server, str(tmp_path / "verl.parquet"), "-o", str(out), *fields) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["extra_info"]["index"], r["exprl"]["raw"]) for r in written] == [(0, 2.0), (1, 4.0)]
    assert written[0]["prompt"] == [{"role": "user", "content": "Q?"}]  # the row, as JSON

    table = pa.table({"id": ["r1", "r2", "r3"], "question": ["Q?"] * 3, "reference": ["R."] * 3,
                      "response": ["a [[score 3]]"] * 3, "blob": [None, b"\x00\x01", None],
                      "weight": [1.0, 1.0, float("nan")]})  # fmt: skip
    pq.write_table(table, tmp_path / "bad.parquet")
    assert run(server, str(tmp_path / "bad.parquet"), "-o", str(tmp_path / "o.jsonl")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/bad.parquet:2: field 'blob': a bytes value, which JSON cannot hold" in err
    assert f"{tmp_path}/bad.parquet:3: field 'weight': a float value" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; the environment points S3 clients at it."""
    pytest.importorskip("moto")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                             "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}  # fmt: skip
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's S3 server did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload(folder: Path, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=bucket)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"runs/{path.relative_to(folder).as_posix()}")


def test_an_s3_prefix_scores_like_the_same_local_folder(
    s3: str, server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = lay_out(tmp_path / "rollouts")
    upload(folder, "exprl-test")
    assert run(server, str(folder), "-o", str(tmp_path / "local.jsonl")) == 0
    assert run(server, "s3://exprl-test/runs", "-o", str(tmp_path / "s3.jsonl")) == 0
    assert outputs(tmp_path / "s3.jsonl") == outputs(tmp_path / "local.jsonl")
    one = "s3://exprl-test/runs/step-2/b.jsonl.gz"
    assert run(server, one, "-o", str(tmp_path / "one.jsonl")) == 0
    assert [r[0] for r in outputs(tmp_path / "one.jsonl")] == ["b1"]

    assert run(server, "s3://exprl-test/missing", "-o", str(tmp_path / "x.jsonl")) == 2
    assert "cannot read s3://exprl-test/missing: not found" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
