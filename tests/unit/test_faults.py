"""muslin.faults: a fault test fails unless its fault fired where it was armed."""

from __future__ import annotations

import pytest

from muslin import faults


def operation(*steps):
    for step in steps:
        faults.checkpoint(step)
    return "done"


def test_the_fault_stops_the_operation_at_its_step_and_is_disarmed_after():
    reached = []
    with faults.injected("b"):
        faults.checkpoint("a")
        reached.append("a")
        faults.checkpoint("b")
        reached.append("b")
    assert reached == ["a"]
    assert operation("a", "b") == "done"


def test_a_step_never_reached_fails():
    with pytest.raises(faults.FaultNotReached) as err:
        with faults.injected("renamed"):
            operation("a", "b")
    assert str(err.value) == "the operation never reached checkpoint renamed"
    assert operation("renamed") == "done"


def test_a_fault_swallowed_by_the_operation_fails():
    def careless():
        try:
            faults.checkpoint("a")
        except faults.InjectedFault:
            pass

    with pytest.raises(faults.FaultNotReached) as err:
        with faults.injected("a"):
            careless()
    assert str(err.value) == "the fault injected at a did not stop the operation"


def test_another_error_goes_through():
    with pytest.raises(ValueError):
        with faults.injected("a"):
            raise ValueError("unrelated")
    assert operation("a") == "done"
