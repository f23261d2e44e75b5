"""Capacity planning: how many replicas/cores serve a rate within a p99 SLO.

:mod:`.simulate` replays traffic through the serving engine's own batcher on a measured
profile; :mod:`.plan` searches the fewest replicas per scenario; :mod:`.inputs` gets the profile
and the corpus lengths; :mod:`.spread` holds the measured scatter of real batch times.
"""

from .inputs import corpus_lengths, engine_profile, read_profile
from .plan import PlanInputs, PlanRow, Scenario, make_plan, plan_scenario, replica_capacity
from .simulate import Arrivals, CostModel, EngineConfig, SimResult, simulate
from .spread import Spread

__all__ = [
    "Arrivals",
    "CostModel",
    "EngineConfig",
    "PlanInputs",
    "PlanRow",
    "Scenario",
    "SimResult",
    "Spread",
    "corpus_lengths",
    "engine_profile",
    "make_plan",
    "plan_scenario",
    "read_profile",
    "replica_capacity",
    "simulate",
]
