"""The job state machine: which status may follow which."""

from __future__ import annotations

from enum import StrEnum

from scanner.errors import InvalidTransition


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETE, Status.FAILED, Status.TIMEOUT, Status.CANCELLED})

# running -> pending is a retry (or an interrupted attempt handed back to the queue).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset(
        {Status.PENDING, Status.COMPLETE, Status.FAILED, Status.TIMEOUT, Status.CANCELLED}
    ),
    **{s: frozenset() for s in TERMINAL},
}


def sources(target: Status) -> frozenset[Status]:
    """The states from which ``target`` may be reached."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if target in nexts)


def check(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"a {current} job cannot become {target}")
