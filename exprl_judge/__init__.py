"""The verifiers judge plugin ``exprl-judge``.

verifiers imports a plugged judge by its id as a top-level package and takes the one
``Judge`` subclass in its ``__all__``; this package is that id for
:class:`exprl_rewards.adapters.verifiers_judge.ExpRLJudge`::

    [[env.taskset.task.judges]]
    id = "exprl-judge"
    base_url = "http://127.0.0.1:8000/v1"
    model = "judge"
"""

from exprl_rewards.adapters.verifiers_judge import ExpRLJudge, ExpRLJudgeConfig

__all__ = ["ExpRLJudge", "ExpRLJudgeConfig"]
