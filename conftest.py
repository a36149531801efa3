"""Modules that import an optional trainer which this environment lacks are not
collected for doctests (the verifiers plugin is tested in its own environment)."""

from importlib.util import find_spec

collect_ignore = []
if find_spec("verifiers") is None:
    collect_ignore += ["exprl_rewards/adapters/verifiers_judge.py", "exprl_judge"]
