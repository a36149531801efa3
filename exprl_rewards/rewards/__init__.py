"""Rewards: from judge verdicts to training signal.

:mod:`.pipeline` (rollouts in, rewards and advantages out) with its request layouts
(:mod:`.growing`, :mod:`.tagged`) and domain routing (:mod:`.routing`); :mod:`.results`
and :mod:`.batch_stats` (what a batch produced); :mod:`.calibration` and :mod:`.fitting`
(scores to probabilities); :mod:`.advantages` and :mod:`.kl` (estimators);
:mod:`.canaries` (hack alarms); :mod:`.metrics` (judge quality). Sits above the judges,
below the adapters and commands.
"""
