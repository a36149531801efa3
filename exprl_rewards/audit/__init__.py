"""Judge calibration audits: how well a judge's scores predict labelled correctness.

:mod:`~exprl_rewards.audit.datasets` loads labelled rollouts,
:mod:`~exprl_rewards.audit.run` judges and measures them, and
:mod:`~exprl_rewards.audit.report` writes the report folder. The command line is
``python -m exprl_rewards.audit`` (:mod:`exprl_rewards.cli.audit`).
"""

from __future__ import annotations

from .datasets import DATASETS, Labelled, load_dataset
from .report import write_report
from .run import INJECTIONS, AuditOptions, Sample, audit

__all__ = [
    "DATASETS",
    "INJECTIONS",
    "AuditOptions",
    "Labelled",
    "Sample",
    "audit",
    "load_dataset",
    "write_report",
]
