"""The pytest plugin of the workbench harness: service fixtures, browser fixtures, log reports.

Loaded with ``-p workbench.testing.plugin``. ``--require-services`` (set by the CI command) turns
every skipped test into a failure, so a missing service can never hide behind a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.testing.process import ServiceProcess

pytest_plugins = ["workbench.testing.fixtures", "workbench.testing.jupyter", "workbench.testing.faults"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbench")
    group.addoption("--require-services", action="store_true",
                    default=os.environ.get("WORKBENCH_REQUIRE_SERVICES") == "1",
                    help="fail the run if any test is skipped (CI: every service must run)")
    group.addoption("--artifacts-dir", default=os.environ.get("WORKBENCH_ARTIFACTS", "test-artifacts"),
                    help="where tests save screenshots and other artifacts")


@pytest.fixture(scope="session")
def artifacts_dir(pytestconfig: pytest.Config) -> Path:
    """Directory for screenshots and other files a person may want to look at after a run."""
    path = Path(pytestconfig.getoption("artifacts_dir")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    # Server logs explain most failures of integration tests: attach the tail of each log of
    # every service the failing test used.
    seen: set[int] = set()
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ServiceProcess) and id(value) not in seen:
            seen.add(id(value))
            report.sections.append((f"{value.name} log", value.log_tail()))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # An expected failure is reported as skipped too, but it ran and failed as expected: not a skip.
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("require_services") and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"--require-services: {len(_skipped)} test(s) skipped, failing the run:", red=True)
            for nodeid in _skipped:
                reporter.write_line(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    # How long each real service took to come up: the figures that bound the suite's wall time.
    from workbench.testing.fixtures import started_services

    services = [s for s in started_services() if s.start_seconds is not None]
    if services:
        terminalreporter.section("service start times")
        for service in services:
            terminalreporter.write_line(f"{service.name:<12} {service.start_seconds:6.2f}s  {service.address}")
