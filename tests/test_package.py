"""The public surface, the import weight, and the README example."""

from __future__ import annotations

import ast
import graphlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import exprl_rewards
from exprl_rewards import MissingExtraError

from conftest import ROOT


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(exprl_rewards).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations"}  # from __future__
    assert set(exprl_rewards.__all__) - {"__version__"} == public
    names = [n for n in exprl_rewards.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))


def test_import_does_not_load_heavy_dependencies() -> None:
    code = (
        "import sys, exprl_rewards, exprl_rewards.verify, exprl_rewards.judges.vllm\n"
        "import exprl_rewards.cli.score, exprl_rewards.demo.race\n"
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'ray') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_py_typed_ships() -> None:
    assert (ROOT / "exprl_rewards" / "py.typed").is_file()


def test_readme_example_runs_and_prints_what_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    expected = re.search(r"```text\n(.*?)```", readme, re.S)
    assert code
    assert expected
    out = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, check=True
    )
    assert out.stdout == expected.group(1)
    # The README's first screen: exactly two commands.
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make run", "make test"]


def test_vllm_judge_without_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from exprl_rewards.judges.vllm import VLLMJudge

    monkeypatch.setitem(sys.modules, "vllm", None)  # what a missing package looks like
    with pytest.raises(MissingExtraError, match=r"pip install 'exprl-rewards\[cpu\]'"):
        VLLMJudge("any-model")


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``module`` imports, TYPE_CHECKING and lazy imports included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            base = ".".join([*parts[: len(parts) - node.level + 1], node.module or ""]).strip(".")
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return (found & modules) - {module}


def test_the_package_has_no_import_cycles() -> None:
    """Each module sits below the ones that import it: no cycle, not even one that only
    type checking or a function-level import closes (graphlib finds any)."""
    paths = {}
    for path in (ROOT / "exprl_rewards").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        paths[name.removesuffix(".__init__")] = path
    graph = {m: _imports(m, p, set(paths)) for m, p in paths.items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


LAYERS = ["errors", "text", "judges", "rewards", "io"]  # each imports only those before it


def test_nothing_below_imports_what_sits_above() -> None:
    """The folders follow the data flow: text -> judges -> rewards -> io; none of them
    imports the adapters, the audit, the commands or the trainers above them."""
    paths = {}
    for path in (ROOT / "exprl_rewards").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        paths[name.removesuffix(".__init__")] = path

    def layer(module: str) -> str:
        return module.removeprefix("exprl_rewards.").split(".")[0]

    upward = []
    for module, path in paths.items():
        if layer(module) not in LAYERS:
            continue
        for target in _imports(module, path, set(paths)):
            if layer(target) not in LAYERS[: LAYERS.index(layer(module)) + 1]:
                upward.append(f"{module} -> {target}")
    assert not upward
