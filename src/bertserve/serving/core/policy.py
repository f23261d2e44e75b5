"""Adaptive student pruning: how many students (a prefix in boosting order) the next batch runs.

Boosting orders students by importance, so any prefix S_1..S_m is a valid model. Under a burst
the queue's predicted work outgrows the slack of its oldest request; dropping the last students
shortens every batch and lets the queue drain. The policy picks the largest ``m`` whose
predicted backlog still fits the slack, cuts at once (a missed deadline is worse than a little
quality) and restores students only when the backlog with them fits with room to spare, so it
does not flap between two counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class StudentPolicy:
    """Chooses the student count per batch from queue state and SLO slack.

    max_students: students in the artifact (1 → the policy always answers 1).
    min_students: never go below this many.
    cut_fraction: prune when the queue's predicted finish uses more than this share of its slack.
    restore_fraction: add a student back only when, with it, less than this share is used.
    enabled: False always runs every student.
    """

    max_students: int
    min_students: int = 1
    cut_fraction: float = 0.8
    restore_fraction: float = 0.5
    enabled: bool = True
    current: int = 0

    def __post_init__(self) -> None:
        self.min_students = max(1, min(self.min_students, self.max_students))
        self.current = self.max_students

    def choose(self, pressure: Callable[[int], float]) -> int:
        """Student count for the next batch.

        pressure(m): with m students per batch, the largest share of a waiting request's slack
        that its predicted finish uses (0: nothing waits; above 1: a deadline would be missed).
        """
        if not self.enabled or self.max_students <= 1:
            self.current = self.max_students
            return self.current
        m = self.current
        while m > self.min_students and pressure(m) > self.cut_fraction:
            m -= 1
        if m == self.current:
            while m < self.max_students and pressure(m + 1) < self.restore_fraction:
                m += 1
        self.current = m
        return m
