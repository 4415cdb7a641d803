import pytest

from scanner.errors import InvalidTransition
from scanner.jobs.states import TERMINAL, TRANSITIONS, Status, check, sources


def test_terminal_states_lead_nowhere() -> None:
    assert {s for s in Status if s.terminal} == TERMINAL
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
        for target in Status:
            with pytest.raises(InvalidTransition, match=f"a {status} job cannot"):
                check(status, target)


def test_lifecycle_edges() -> None:
    check(Status.PENDING, Status.RUNNING)
    check(Status.PENDING, Status.CANCELLED)
    check(Status.RUNNING, Status.PENDING)  # a retry
    for end in TERMINAL:
        check(Status.RUNNING, end)
    with pytest.raises(InvalidTransition):
        check(Status.PENDING, Status.COMPLETE)


def test_sources_inverts_transitions() -> None:
    assert sources(Status.RUNNING) == {Status.PENDING}
    assert sources(Status.PENDING) == {Status.RUNNING}
    assert sources(Status.CANCELLED) == {Status.PENDING, Status.RUNNING}
    assert sources(Status.COMPLETE) == {Status.RUNNING}
