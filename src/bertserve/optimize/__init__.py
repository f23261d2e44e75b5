"""``bertserve optimize``: from a teacher to the cheapest served model that meets an SLO and a
quality floor.

:mod:`.candidates` says what is built and by which bertserve command; :mod:`.budget` turns
``--budget`` into training steps; :mod:`.quality` measures each candidate against the teacher on
held-out and out-of-domain text; :mod:`.capacity` predicts served capacity from the start-up
profile (the planner) and verifies the best with a real server under open-loop load;
:mod:`.report` writes the table, the Pareto plot and the commands; :mod:`.run` ties them
together, resumably.
"""

from .run import OptimizeOptions, OptimizeResult, optimize

__all__ = ["OptimizeOptions", "OptimizeResult", "optimize"]
