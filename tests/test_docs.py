"""Every code block in the README and ``docs/`` is run or checked, and the docs build.

- **Run**: the blocks marked ``<!-- docs-test: NAME -->`` below, as written: the
  quickstart's commands in a shell (its judge server included), the From Python
  example against the real vLLM judge, verl's data preparation; the ``readme-test``
  blocks run in the trainers' tests (``test_adapters``, ``test_verl_loop``); the
  README's example in ``test_package``.
- **Checked**: every Python block compiles; every TOML and JSON block parses; every
  shell command of ours parses with the command's own parser (``python -m
  exprl_rewards.X``, the console scripts), every ``make`` target exists, and every
  verl command line composes with verl 0.9.1's own Hydra config; any other program must
  be one the docs are expected to name.
- **Built**: ``mkdocs build --strict`` (the links, the anchors, the API reference).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.parser import ExpRLParser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = {"python", "bash", "toml", "json", "text", "jinja"}
# programs the docs may name without our checking them
OTHERS = {"git", "cd", "source", "cat", "curl", "kill", "until", "do", "done", "sleep", "pip",
          "vllm", "jq", "export", "wait", "echo", "exit", "ray", "uv", "torchrun"}  # fmt: skip
SCRIPTS = {"exprl-score": "score", "exprl-audit": "audit", "exprl-serve": "serve",
           "exprl-verify": "verify"}  # fmt: skip
FOREIGN_SCRIPTS = {"train.py", "prepare_gsm8k.py"}  # slime's trainer; a script in the docs
_MARK = re.compile(r"<!-- (docs|readme)-test: ([\w-]+) -->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    mark: str | None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks() -> list[Block]:
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            opening = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
            if opening is None:
                i += 1
                continue
            indent, language, start = opening.group(1), opening.group(2), i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][len(indent) :])
                i += 1
            before = lines[start - 1] if start else ""
            mark = _MARK.search(before)
            found.append(Block(page, start + 1, language, "\n".join(body) + "\n",
                               mark.group(2) if mark else None))  # fmt: skip
            i += 1
    return found


BLOCKS = _blocks()


def marked(name: str) -> Block:
    (block,) = [b for b in BLOCKS if b.mark == name]
    return block


def test_there_are_blocks_and_each_says_its_language() -> None:
    assert len(BLOCKS) > 20
    unnamed = [str(b) for b in BLOCKS if b.language not in LANGUAGES]
    assert not unnamed, f"blocks without a known language: {unnamed}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "python"], ids=str)
def test_python_blocks_compile(block: Block) -> None:
    compile(block.code, str(block), "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language in ("toml", "json")], ids=str)
def test_config_blocks_parse(block: Block) -> None:
    code = "\n".join(line.split("  #")[0] for line in block.code.splitlines())
    if block.language == "toml":
        tomllib = pytest.importorskip("tomllib")  # Python 3.11+
        tomllib.loads(code)
    else:
        json.loads(code)


# --- shell commands ---------------------------------------------------------------------


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a shell block: continuations joined, here-documents
    skipped, split at ``&&``, ``||``, ``;``, ``|`` and ``&``."""
    text = code.replace("\\\n", " ")
    lines, here = [], None
    for line in text.splitlines():
        if here is not None:
            here = None if line.strip() == here else here
            continue
        if (m := re.search(r"<<-?\s*'?(\w+)'?", line)) is not None:
            here, line = m.group(1), line[: m.start()]
        lines.append(line)
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&", ">", ">>", "<", "2>", ">/dev/null"):
                if command:
                    yield command
                command = [] if token not in (">", ">>", "<") else ["__redirect__"]
            elif command == ["__redirect__"]:
                command = []
            else:
                command.append(token)
        if command and command != ["__redirect__"]:
            yield command


class Parsed(Exception):
    """Raised instead of running a command once its options parsed."""


def parse_only(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse ``args`` with ``python -m exprl_rewards.MODULE``'s own parser, running nothing."""
    original = ExpRLParser.parse_known_args

    def parse(self: ExpRLParser, argv: Any = None, namespace: Any = None) -> Any:
        namespace, extra = original(self, argv, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        raise Parsed

    name = f"exprl_rewards.{module}"
    if hasattr(importlib.import_module(name), "__path__"):  # a package: python -m runs this
        name += ".__main__"
    with monkeypatch.context() as m:
        m.setattr(ExpRLParser, "parse_known_args", parse)
        expected: Any = SystemExit if "--help" in args else Parsed  # help exits 0 at once
        with pytest.raises(expected) as raised:
            importlib.import_module(name).main(args)
        assert expected is Parsed or raised.value.code == 0


def verl_overrides(args: list[str]) -> None:
    """Compose verl's own PPO config with the command line's Hydra overrides."""
    verl = pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir

    overrides = [a for a in args if "=" in a]
    config_dir = str(Path(verl.__file__).parent / "trainer/config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    if config.reward.reward_manager.name == "ExpRLProcessRewardManager":
        with warnings.catch_warnings():  # verl's and Ray's own import-time notices
            warnings.simplefilter("ignore", DeprecationWarning)
            from exprl_rewards.adapters.verl_process import _check_agent_loop

            _check_agent_loop(config)  # what the manager checks at start: the steps survive


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "bash"], ids=str)
def test_shell_commands_parse_with_their_own_parsers(
    block: Block, monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in commands(block.code):
        while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
            command = command[1:]  # VAR=value before a command
        program, args = command[0], command[1:]
        if program in SCRIPTS:
            parse_only(SCRIPTS[program], args, monkeypatch)
        elif program == "make":
            assert set(args) <= make_targets(), f"{block}: no make target {args}"
        elif program.endswith(("python", "python3")):
            if args[:1] == ["-m"] and args[1].startswith("exprl_rewards."):
                parse_only(args[1].removeprefix("exprl_rewards."), args[2:], monkeypatch)
            elif args[:2] == ["-m", "verl.trainer.main_ppo"]:
                verl_overrides(args[2:])
            elif args[:1] != ["-m"]:
                script = args[0]
                assert (ROOT / script).is_file() or script in FOREIGN_SCRIPTS, (
                    f"{block}: no script {script}"
                )
        else:
            assert program in OTHERS, f"{block}: unexpected program {program!r}"


def test_the_shell_check_would_catch_a_bad_flag_and_a_bad_verl_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit):
        parse_only("score", ["in.jsonl", "-o", "out.jsonl", "--concurency", "3"], monkeypatch)
    with pytest.raises(Exception, match="Could not override"):
        verl_overrides(["actor_rollout_ref.rollout.agent.agent_loop_manager_class=x.Y"])


# --- blocks run as written --------------------------------------------------------------


def _shell(code: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{code}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_the_quickstart_grades_a_file_as_written(tmp_path: Path) -> None:
    run = _shell(marked("quickstart-file").code, tmp_path, 900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert all(r["exprl"]["score"] is not None for r in rows)
    assert "wrote scored.jsonl" in run.stderr


def test_the_quickstart_starts_a_judge_server_and_grades_through_it(tmp_path: Path) -> None:
    from exprl_rewards.judges.local_model import _free_port

    port = str(_free_port())
    shutil.copy(ROOT / "docs" / "quickstart.md", tmp_path)  # the file block writes its input
    code = marked("quickstart-file").code.split("python -m exprl_rewards.score")[0]
    code += marked("quickstart-server").code.replace("8000", port)
    run = _shell(code, tmp_path, 900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = (tmp_path / "scored-server.jsonl").read_text().splitlines()
    assert len(rows) == 2
    assert all(json.loads(r)["exprl"]["score"] is not None for r in rows)
    assert json.loads(rows[0])["exprl"]["settings"]["judge"].startswith("openai:")


def test_from_python_runs_as_written_against_the_real_judge(judge_server: Any) -> None:
    code = marked("from-python").code
    code = code.replace("http://127.0.0.1:8000/v1", judge_server.url)
    code = re.sub(r'OpenAIJudge\(\s*"judge"', f'OpenAIJudge("{judge_server.model}"', code)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line.split() for line in run.stdout.splitlines()]
    assert [line[0] for line in lines] == ["right", "wrong"]
    assert all(line[1] != "None" for line in lines), run.stdout  # scored
    assert all(0.0 <= float(line[1]) <= 1.0 for line in lines)
    assert float(lines[0][3]) == pytest.approx(-float(lines[1][3]))  # a group of two


def test_verls_data_preparation_puts_the_reference_where_the_adapter_reads_it(
    tmp_path: Path,
) -> None:
    from exprl_rewards.adapters.verl import compute_score_sync

    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run([sys.executable, "-c", marked("verl-data").code], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    pd = pytest.importorskip("pandas")
    rows = pd.read_parquet(tmp_path / "gsm8k_exprl.parquet")
    assert len(rows) == 1319
    row = rows.iloc[0]
    with FaultServer() as judge:
        result = compute_score_sync(row["data_source"], "She makes $18. [[score 5]]",
                                    row["reward_model"]["ground_truth"], dict(row["extra_info"]),
                                    base_url=judge.url, model="marks", top_logprobs=None)  # fmt: skip
        prompt = judge.bodies[-1]["messages"][-1]["content"]
    assert result["score"] == 1.0
    assert "Janet sells 16 - 3 - 4" in prompt  # the reference, from extra_info["solution"]
    assert "ducks lay 16 eggs per day" in prompt  # the question


def test_the_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "--max-backend-failures" in cli  # the commands' live --help


def test_the_readmes_links_lead_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)[^)#]+)(?:#[^)]*)?\)", readme)
    assert {"docs/trainers/verl.md", "docs/trainers/trl.md", "docs/trainers/openrlhf.md"} <= set(
        links
    )
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing
