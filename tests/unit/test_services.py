"""The daemon's services host on the fake kernel: start after recovery, reconcile on start,
changes in order, restart after death with back-off, stop order, a start that raises."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from fakekernel import FakeKernel
from muslin.daemon import start_engine
from muslin.engine import Engine
from muslin.lab import wait_until
from muslin.services import Services, ServiceThread

SUBNET = "10.10.0.0/24"


class Recorder(ServiceThread):
    """Remembers what it read on start and what it heard since; dies on hearing of a container
    named ``dies_on``."""

    def __init__(self, name: str = "recorder", log: list | None = None, dies_on: str | None = "boom"):
        super().__init__()
        self.name = name
        self.dies_on = dies_on
        self.log = log if log is not None else []
        self.starts: list[dict] = []
        self.heard: list[tuple] = []
        self.closed = 0

    def reconcile(self, engine) -> None:
        self.log.append(("start", self.name))
        names = {c.id: c.name for c in engine.containers()}
        self.starts.append({"networks": sorted(n.name for n in engine.networks()),
                            "endpoints": sorted(names[e.container_id] for e in engine.endpoints())})

    def apply(self, change) -> None:
        name = change.container.name if change.container else None
        if name is not None and name == self.dies_on:
            raise RuntimeError("boom heard")
        self.heard.append((change.action, change.network.name, name))

    def close(self) -> None:
        self.closed += 1
        self.log.append(("stop", self.name))


class Unstartable(Recorder):
    def __init__(self, failures: int = 1):
        super().__init__("unstartable")
        self.failures = failures

    def reconcile(self, engine) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("address already in use")
        super().reconcile(engine)


@pytest.fixture
def engine(tmp_path):
    engine = Engine(str(tmp_path / "root"), kernel=FakeKernel())
    yield engine
    engine.close()


def fast(services, **kw) -> Services:
    return Services(services, backoff=kw.pop("backoff", 0.05), max_backoff=kw.pop("max_backoff", 0.4),
                    check_interval=0.01, **kw)


def test_services_start_after_recovery_and_read_the_repaired_store(engine):
    engine.create_network("kept", subnets=[SUBNET])
    crashed = engine.create_network("crashed", subnets=["10.11.0.0/24"])
    engine.store.set_state("networks", crashed.id, "pending")  # a crash before it was made active
    order = []
    recover = engine.recover
    engine.recover = lambda: order.append("recover") or recover()
    service = Recorder(log=order)
    hosted = start_engine(engine, [service])
    try:
        assert order == ["recover", ("start", "recorder")]
        assert service.starts == [{"networks": ["kept"], "endpoints": []}]
    finally:
        hosted.stop()


def test_start_reconciles_what_the_store_holds(engine):
    engine.create_network("n1", subnets=[SUBNET])
    engine.create_container("c1", "n1")
    engine.create_container("c2", "n1")
    service = Recorder()
    hosted = fast([service])
    hosted.start(engine)
    try:
        assert service.starts == [{"networks": ["n1"], "endpoints": ["c1", "c2"]}]
        assert hosted.status() == {"recorder": {"state": "running", "restarts": 0, "error": None}}
    finally:
        hosted.stop()


def test_changes_are_delivered_in_the_order_they_were_committed(engine):
    service = Recorder()
    hosted = fast([service])
    hosted.start(engine)
    try:
        engine.create_network("n1", subnets=[SUBNET])
        for name in ("c1", "c2", "c3"):
            engine.create_container(name, "n1")
        engine.remove_container("c2", force=True)
        expected = [("network.created", "n1", None), ("endpoint.created", "n1", "c1"),
                    ("endpoint.created", "n1", "c2"), ("endpoint.created", "n1", "c3"),
                    ("endpoint.removed", "n1", None)]
        wait_until(lambda: len(service.heard) == len(expected), lambda: f"heard {service.heard}", timeout=5)
        assert service.heard == expected
    finally:
        hosted.stop()


def test_a_service_that_dies_is_restarted_after_a_back_off_and_reconciles_again(engine, caplog):
    engine.create_network("n1", subnets=[SUBNET])
    service, other = Recorder(), Recorder("other", dies_on=None)
    hosted = fast([service, other], backoff=0.3)
    hosted.start(engine)
    try:
        with caplog.at_level(logging.INFO, logger="muslin"):
            engine.create_container("boom", "n1")
            wait_until(lambda: hosted.status()["recorder"]["state"] == "restarting", "the death noticed", timeout=5)
            engine.create_container("missed", "n1")  # while it is down: start reads it from the store
            wait_until(lambda: len(service.starts) == 2, "a restart", timeout=5)
            # reconcile runs inside start: the state turns to running just after it returns
            wait_until(lambda: hosted.status()["recorder"]["state"] == "running", "running again", timeout=5)
        assert service.starts[1] == {"networks": ["n1"], "endpoints": ["boom", "missed"]}
        assert service.closed == 1  # stopped before its restart
        assert hosted.status()["recorder"] == {"state": "running", "restarts": 1, "error": None}
        assert "service recorder died: boom heard; restarting it in 0.3s" in caplog.text
        died = next(r.created for r in caplog.records if "recorder died" in r.getMessage())
        restarted = next(r.created for r in caplog.records if "restarting service recorder" in r.getMessage())
        # log records carry time.time(), the back-off waits on the monotonic clock: a few ms apart
        assert restarted - died >= 0.3 - 0.02
        # the other service never noticed, and heard everything
        assert other.starts == [{"networks": ["n1"], "endpoints": []}]
        wait_until(lambda: len(other.heard) == 2, "the other service's changes", timeout=5)
        engine.create_container("after", "n1")
        wait_until(lambda: ("endpoint.created", "n1", "after") in service.heard, "a change after restart", timeout=5)
    finally:
        hosted.stop()


def test_the_back_off_doubles_while_a_service_keeps_dying_and_is_capped(caplog):
    hosted = fast([Recorder()], backoff=0.1, max_backoff=0.4)
    entry = hosted._entries[0]
    with caplog.at_level(logging.ERROR, logger="muslin"):
        for _ in range(5):
            entry.started = time.monotonic()  # died at once, each time
            hosted._died(entry, RuntimeError("x"), "died")
        entry.started = 0.0  # it had run long: back to the first delay
        hosted._died(entry, RuntimeError("x"), "died")
    delays = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records]
    assert delays == ["0.1s", "0.2s", "0.4s", "0.4s", "0.4s", "0.1s"]


def test_a_service_whose_start_raises_does_not_stop_the_others_and_is_retried(engine, caplog):
    engine.create_network("n1", subnets=[SUBNET])
    broken, fine = Unstartable(failures=2), Recorder()
    hosted = fast([broken, fine])
    with caplog.at_level(logging.ERROR, logger="muslin"):
        hosted.start(engine)  # does not raise
    try:
        assert hosted.status()["unstartable"]["state"] == "restarting"
        assert hosted.status()["unstartable"]["error"] == "address already in use"
        assert "service unstartable failed to start: address already in use; restarting it in 0.1s" in caplog.text
        assert fine.starts == [{"networks": ["n1"], "endpoints": []}]
        engine.create_container("c1", "n1")  # the daemon goes on serving
        wait_until(lambda: hosted.status()["unstartable"]["state"] == "running", "a start at last", timeout=5)
        assert hosted.status()["unstartable"]["restarts"] == 2
        assert broken.starts == [{"networks": ["n1"], "endpoints": ["c1"]}]
    finally:
        hosted.stop()


def test_stop_stops_every_service_last_started_first_and_restarts_none(engine):
    order = []
    services = [Recorder("first", order), Recorder("second", order), Recorder("third", order)]
    hosted = fast(services)
    hosted.start(engine)
    hosted.stop()
    assert order[3:] == [("stop", "third"), ("stop", "second"), ("stop", "first")]
    assert all(s["state"] == "stopped" for s in hosted.status().values())
    engine.create_network("n1", subnets=[SUBNET])  # after stop: nobody is handed it
    assert all(s.heard == [] for s in services)
    assert not any(t.name.startswith("service-") for t in threading.enumerate())


def test_a_service_whose_change_intake_raises_is_restarted(engine):
    class Deaf(Recorder):
        def changed(self, change):
            raise RuntimeError("queue full")

    service = Deaf()
    hosted = fast([service])
    hosted.start(engine)
    try:
        engine.create_network("n1", subnets=[SUBNET])  # the operation itself succeeds
        assert engine.find_network("n1")
        wait_until(lambda: len(service.starts) == 2, "a restart", timeout=5)
        assert service.starts[1]["networks"] == ["n1"]
    finally:
        hosted.stop()


def test_the_status_line_for_systemd_names_each_service_and_why_it_is_down(engine):
    lines = []
    hosted = fast([Recorder(), Unstartable(failures=100)], backoff=10, on_status=lines.append)
    hosted.start(engine)
    try:
        assert lines[-1] == "services: recorder running, unstartable restarting (address already in use)"
    finally:
        hosted.stop()
