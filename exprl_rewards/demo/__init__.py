"""A numpy testbed for the paper's claim: sparse, outcome and process rewards race.

``python -m exprl_rewards.demo [--quick]``. Tabular policies learn to reproduce hidden
references; a simulated judge grades rollouts (outcome) or their prefixes (process)
against the reference on the 1-5 scale, with knobs for noise, miscalibration, length bias
and an exploitable quirk. The rewards go through the library's own advantage estimators
and token broadcast. numpy only: importing this package imports neither torch nor vLLM.

- :mod:`.world`: prompts, the rules of the path world and the repair world (irrelevant
  steps, mistakes that can be retracted), the policy, the simulated judge;
- :mod:`.rewards`: rollouts -> per-token advantages (sparse, outcome, process);
- :mod:`.race`: one run (Stage I then Stage II) and its curves;
- :mod:`.report`: intervals over seeds, tables, the figure.
"""

from __future__ import annotations

from .race import DemoConfig, RunResult, run
from .world import JudgeSim, Policy, World

__all__ = ["DemoConfig", "JudgeSim", "Policy", "RunResult", "World", "run"]
