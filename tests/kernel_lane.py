"""pytest plugin: tests that need kernel features this kernel lacks run in the full-kernel lane.

Mark a test with the features it needs::

    @pytest.mark.kernel_features("8021q", "bridge_vlan_filtering")
    def test_trunk(lab): ...

Where this kernel has them all (each tried for real, once per session, in a scratch network
namespace: `kernel_has`), the test runs here as usual. Otherwise it is *delegated*: at the
first delegated test the plugin boots the lane's VM (muslin.lab.vm: Debian's own kernel)
once and runs ``pytest <every delegated test>`` in it; each delegated test then reports the
guest's outcome here (the guest's own reports: its tracebacks, its skip reasons), without
running any of its fixtures on this host. A test the guest did not finish (crash, timeout)
fails with the console's tail. When the lane cannot run (no QEMU, no kernel, no boot), each
delegated test is skipped with the reason, and a PytestWarning says so in the summary.

$MUSLIN_KERNEL_LANE, or --kernel-lane: ``auto`` (default) delegates what this kernel lacks;
``always`` delegates every marked test (to test the lane itself); ``off`` never boots and
skips those tests instead. The lane sets ``guest`` for the run inside the VM, where marked
tests simply run. $MUSLIN_KERNEL_LANE_TIMEOUT caps the guest's run, in seconds.

With pytest-timeout, the first delegated test (which runs the whole batch in the VM) may take
the boot, the guest's run and a margin instead of the suite's per-test timeout; in the guest,
each test has the suite's per-test timeout, so one that hangs fails there and the rest still run.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

MODE_ENV = "MUSLIN_KERNEL_LANE"
REPORTS_ENV = "MUSLIN_KERNEL_LANE_REPORTS"  # set in the guest: where it writes its reports, one JSON per line
TIMEOUT_ENV = "MUSLIN_KERNEL_LANE_TIMEOUT"
MODES = ("auto", "always", "off")
GUEST = "guest"
BOOT_TIMEOUT = 120  # seconds the VM may take to boot
TIMEOUT_PLUGIN = "timeout"  # pytest-timeout, under the name its entry point registers

#: feature -> iproute2 commands that need it; each probe runs in a fresh namespace holding a veth pair p0/p1
FEATURES = {
    "veth": [],
    "dummy": ["link add f0 type dummy"],
    "8021q": ["link add link p0 name p0.5 type vlan id 5"],
    "macvlan": ["link add link p0 name f0 type macvlan mode bridge"],
    "ipvlan": ["link add link p0 name f0 type ipvlan mode l2"],
    "bridge": ["link add f0 type bridge"],
    "bridge_vlan_filtering": ["link add f0 type bridge vlan_filtering 1"],
    "vxlan": ["link add f0 type vxlan id 42 dstport 4789"],
    "tun": ["tuntap add f0 mode tap"],
    # IPsec ESP as encrypted overlays use it (xfrm_user, esp4, AES-GCM), on the veth's addresses
    "esp": ["xfrm state add src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x100 mode transport "
            "aead 'rfc4106(gcm(aes))' 0x" + "00" * 20 + " 128"],
}


@functools.cache
def kernel_has(feature: str) -> bool:
    """True if this kernel can make `feature` (a FEATURES key), tried in a scratch network namespace."""
    from muslin.lab import Lab, LabError

    try:
        with Lab(name="kfeature") as lab:
            lab.node("probe").ip("link add p0 type veth peer name p1", *FEATURES[feature])
    except (LabError, OSError):
        return False
    return True


def features_of(item: pytest.Item) -> tuple[str, ...]:
    """The kernel features `item` is marked with, in order, without repeats."""
    names = [name for marker in item.iter_markers("kernel_features") for name in marker.args]
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: unknown kernel feature(s) {', '.join(unknown)}; "
                                f"known: {', '.join(FEATURES)} (tests/kernel_lane.py)")
    return tuple(dict.fromkeys(names))


# --- what each delegated test reports -----------------------------------------------------


@dataclass
class GuestRun:
    """The outcome of the one run in the VM."""

    reports: dict[str, list[pytest.TestReport]] = field(default_factory=dict)  # by node id, in order
    unavailable: str | None = None  # the lane could not run the tests: why
    problem: str | None = None  # the run ended badly (crash, timeout, pytest error): what, with the console's tail
    kernel: str = "the kernel lane"


def item_reports(nodeid: str, location: tuple[str, int | None, str], lacking: Sequence[str],
                 run: GuestRun) -> list[pytest.TestReport]:
    """What a delegated test reports here: the guest's reports for it when it ran to the end there;
    a skip when the lane was unavailable; a failure otherwise (never a pass)."""

    def report(when: str, outcome: str, longrepr=None) -> pytest.TestReport:
        return pytest.TestReport(nodeid, location, {}, outcome, longrepr, when)

    if run.unavailable is not None:
        reason = f"needs the full-kernel lane (kernel features {', '.join(lacking)}): {run.unavailable}"
        lineno = (location[1] or 0) + 1
        return [report("setup", "skipped", (location[0], lineno, f"Skipped: {reason}")), report("teardown", "passed")]
    reports = run.reports.get(nodeid, [])
    if reports and reports[-1].when == "teardown":
        return reports
    got = ", ".join(f"{r.when} {r.outcome}" for r in reports) or "nothing"
    text = (f"kernel lane: this test did not finish in {run.kernel} (the guest reported: {got})\n"
            + (run.problem or "the guest's pytest never reported it"))
    return [report("setup", "passed"), report("call", "failed", text), report("teardown", "passed")]


def read_reports(path: str, config: pytest.Config) -> dict[str, list[pytest.TestReport | pytest.CollectReport]]:
    """The guest's reports (its tests', and its failed collections'), by node id; a last line cut
    short by a crash is ignored."""
    reports: dict[str, list[pytest.TestReport | pytest.CollectReport]] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return reports
    for line in lines:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        report = config.hook.pytest_report_from_serializable(config=config, data=data)
        if isinstance(report.longrepr, list):  # a skip's (path, line, reason), which JSON made a list
            report.longrepr = tuple(report.longrepr)
        reports.setdefault(report.nodeid, []).append(report)
    return reports


def _tests(nodeids) -> str:
    return f"{len(nodeids)} test{'' if len(nodeids) == 1 else 's'}"


# --- the plugin ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kernel-lane", choices=MODES, default=None,
                     help=f"tests marked kernel_features: delegate to the full-kernel lane VM what this kernel "
                          f"lacks (auto, default), every one (always), or none, skipping them (off); "
                          f"default ${MODE_ENV}")


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getoption("kernel_lane") or os.environ.get(MODE_ENV) or "auto"
    if mode not in (*MODES, GUEST):
        raise pytest.UsageError(f"{MODE_ENV}={mode}: use one of {', '.join(MODES)}")
    config.pluginmanager.register(KernelLane(config, mode), "muslin-kernel-lane")


class KernelLane:
    def __init__(self, config: pytest.Config, mode: str):
        self.config = config
        self.mode = mode
        self.delegated: dict[str, tuple[str, ...]] = {}  # node id -> the features it is delegated for
        self.guest: GuestRun | None = None
        self.reports_file = open(os.environ[REPORTS_ENV], "a") if mode == GUEST and REPORTS_ENV in os.environ else None

    def pytest_unconfigure(self) -> None:
        if self.reports_file:
            self.reports_file.close()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # after -k/-m deselection: only what will run
            needed = features_of(item)
            if not needed or self.mode == GUEST:
                continue
            lacking = needed if self.mode == "always" else tuple(f for f in needed if not kernel_has(f))
            if lacking:
                self.delegated[item.nodeid] = lacking
        if self.delegated and self.config.pluginmanager.hasplugin(TIMEOUT_PLUGIN):
            allowance = BOOT_TIMEOUT + self._guest_timeout() + 60  # the VM killed and cleaned up: a minute
            for item in session.items:
                if item.nodeid in self.delegated:
                    item.add_marker(pytest.mark.timeout(allowance))

    def _guest_timeout(self) -> float:
        """Seconds the guest's pytest may run (after the boot)."""
        # a cap for a guest that hangs, not a measure: an encrypted overlay's test alone takes
        # about two minutes on the emulated CPU, more beside another virtual machine
        return float(os.environ.get(TIMEOUT_ENV) or 180 + 120 * len(self.delegated))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        lacking = self.delegated.get(item.nodeid)
        if lacking is None:
            return None
        if self.guest is None:
            try:
                self.guest = self._run_guest()
            except pytest.fail.Exception as e:  # pytest-timeout: the lane overran even its own allowance
                self.guest = GuestRun(problem=f"the kernel lane's run was stopped: {e}")
            if self.guest.unavailable is not None:
                warnings.warn(f"KERNEL LANE TESTS SKIPPED: {_tests(self.delegated)} need kernel features this "
                              f"kernel lacks, and the lane is unavailable: {self.guest.unavailable}",
                              pytest.PytestWarning, stacklevel=1)
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in item_reports(item.nodeid, item.location, lacking, self.guest):
            ihook.pytest_runtest_logreport(report=report)
        # No fixture of this test ran here, but fixtures of earlier tests that the next one does not
        # share end now, as after any test (pytest's runner does the same in its teardown phase).
        teardown = pytest.CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem), "teardown")
        if teardown.excinfo is not None:
            ihook.pytest_runtest_logreport(report=pytest.TestReport.from_item_and_call(item, teardown))
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._send(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # the guest's own summary is off: the host shows why a test never ran
            self._send(report)

    def _send(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if self.reports_file:  # in the guest: one line per report, flushed, so a crash loses only the test it hit
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            self.reports_file.write(json.dumps(data, default=str) + "\n")
            self.reports_file.flush()

    # --- the run in the VM ------------------------------------------------------------------

    def _say(self, line: str) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(line)
            terminal.currentfspath = None  # the next result line starts with its file again

    def _run_guest(self) -> GuestRun:
        nodeids = list(self.delegated)
        if self.mode == "off":
            self._say(f"kernel lane: off; {_tests(nodeids)} that need it skipped")
            return GuestRun(unavailable=f"{MODE_ENV}=off")
        from muslin.lab import vm

        why = (f"{MODE_ENV}=always" if self.mode == "always"
               else "this kernel lacks " + ", ".join(sorted({f for fs in self.delegated.values() for f in fs})))
        self._say(f"kernel lane: {_tests(nodeids)} to run in the VM ({why})")
        timeout = self._guest_timeout()
        with tempfile.TemporaryDirectory(prefix="muslin-lane-reports-") as share:
            reports_path = os.path.join(share, "reports.jsonl")
            env = {
                MODE_ENV: GUEST,
                REPORTS_ENV: reports_path,
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # the guest's Python is slow: load only what the tests need
                "PATH": os.path.dirname(sys.executable) + os.pathsep + vm.GUEST_ENV["PATH"],
                **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
            }
            try:
                result = vm.run(self._guest_argv(nodeids), cwd=str(self.config.rootpath), env=env, share=share,
                                timeout=timeout, boot_timeout=BOOT_TIMEOUT, echo=lambda line: self._say(f"  | {line}"),
                                progress=self._say)
            except (vm.LaneUnavailable, OSError) as e:
                reason = e.reason if isinstance(e, vm.LaneUnavailable) else f"{type(e).__name__}: {e}"
                self._say(f"kernel lane: unavailable, {_tests(nodeids)} skipped: {reason.splitlines()[0]}")
                return GuestRun(unavailable=reason)
            received = read_reports(reports_path, self.config)
        reports: dict[str, list[pytest.TestReport]] = {}
        collect_errors = []
        for nodeid, sent in received.items():
            for report in sent:
                if isinstance(report, pytest.TestReport):
                    report.sections.append(("kernel lane", f"ran in {result.kernel}, in the lane's VM"))
                    reports.setdefault(nodeid, []).append(report)
                else:
                    collect_errors.append(f"collecting {nodeid} in the guest failed:\n{report.longreprtext}")
        problem = None
        if result.returncode not in (0, 1):  # pytest: 0 all passed, 1 some failed; else the run itself broke
            what = result.problem or f"the guest's pytest exited {result.returncode}"
            problem = "\n".join([*collect_errors, f"{what}; console:\n{result.tail}"])
        elif len(reports) < len(nodeids):
            problem = "\n".join([*collect_errors, f"console:\n{result.tail}"])
        self._say(f"kernel lane: {_tests(nodeids)} in {result.kernel}, booted in {result.boot_seconds:.1f} s, "
                  f"ran in {result.run_seconds:.0f} s" + (f" ({result.problem})" if result.problem else ""))
        return GuestRun(reports, problem=problem, kernel=str(result.kernel))

    def _guest_argv(self, nodeids: list[str]) -> list[str]:
        config = self.config
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-summary", "--color=no",
                f"--tb={config.getoption('tbstyle')}", "--rootdir", str(config.rootpath)]
        if config.inipath:
            argv += ["-c", str(config.inipath)]
        if config.pluginmanager.hasplugin(TIMEOUT_PLUGIN):  # plugins are not autoloaded in the guest
            argv += ["-p", "pytest_timeout"]
        return [*argv, "--", *nodeids]
