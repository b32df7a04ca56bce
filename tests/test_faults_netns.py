"""Faults across hosts: the namespace harness itself, then zdb in a domain under partitions and loss."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

import pytest

from workbench.testing.faults import FaultNetwork, FaultUnsupported, leftover_namespaces

ECHO = ("import socket,sys\n"
        "s=socket.create_server((sys.argv[1],7000))\n"
        "while True:\n"
        "    c,_=s.accept(); c.sendall(c.recv(100)); c.close()\n")
PROBE = ("import socket,sys,time\n"
         "t=time.monotonic()\n"
         "try:\n"
         "    s=socket.create_connection((sys.argv[1],7000),timeout=float(sys.argv[2])); s.sendall(b'hi')\n"
         "    print(s.recv(10).decode(), round(time.monotonic()-t,3))\n"
         "except OSError as e: print(type(e).__name__, round(time.monotonic()-t,3))\n")


def probe(host, target, timeout: float = 1.0) -> tuple[str, float]:
    """From ``host``, connect to the echo server of ``target``: ('hi', seconds) or (error name, seconds)."""
    answer, seconds = host.run([sys.executable, "-c", PROBE, target.address, str(timeout)]).stdout.split()
    return answer, float(seconds)


def wait_echo(host, target) -> None:
    deadline = time.monotonic() + 10
    while probe(host, target)[0] != "hi":
        assert time.monotonic() < deadline, "echo server did not start"
        time.sleep(0.1)


def test_hosts_reach_each_other_and_a_partition_is_silent_and_pairwise(fault_network):
    a, b, c = fault_network.hosts
    fault_network_echo = a.spawn([sys.executable, "-c", ECHO, a.address])
    wait_echo(b, a)
    assert probe(c, a)[0] == "hi"
    fault_network.partition(a, b)
    answer, seconds = probe(b, a, timeout=1.0)
    assert answer in ("TimeoutError", "timeout") and seconds >= 0.9  # silence, not a fast refusal
    assert probe(c, a)[0] == "hi"   # c still reaches a
    fault_network.heal()
    assert probe(b, a)[0] == "hi"
    fault_network.isolate(a)
    assert probe(c, a, timeout=0.5)[0] != "hi"
    fault_network.heal()
    wait_echo(c, a)
    assert fault_network.fault_count == 2 and fault_network_echo.poll() is None


def test_the_hosts_have_no_way_out_and_the_machine_no_way_in(fault_network):
    # The bridge has no address and the hosts no default route: nothing leaves the private subnet.
    import subprocess

    a = fault_network.hosts[0]
    routes = [line.strip() for line in a.run(["ip", "route"]).stdout.splitlines()]
    assert routes == [f"10.231.{fault_network.subnet}.0/24 dev eth0 proto kernel scope link src {a.address}"]
    assert a.run([sys.executable, "-c", PROBE, "1.1.1.1", "0.5"]).stdout.split()[0] == "OSError"
    bridge = subprocess.run(["ip", "-o", "addr", "show", "dev", fault_network.bridge],
                            capture_output=True, text=True, check=True).stdout
    assert " inet " not in bridge
    out_of_root = subprocess.run(["ip", "route", "get", a.address], capture_output=True, text=True).stdout
    assert fault_network.bridge not in out_of_root


def test_pause_resume_and_kill_reach_the_process(fault_network):
    a, b, _ = fault_network.hosts
    server = a.spawn([sys.executable, "-c", ECHO, a.address])
    wait_echo(b, a)
    fault_network.pause(server)
    assert probe(b, a, timeout=0.5)[0] != "hi"   # stopped: the kernel accepts, nobody answers
    fault_network.resume(server)
    wait_echo(b, a)
    fault_network.kill(server)
    assert server.returncode == -9 and probe(b, a)[0] == "ConnectionRefusedError"


def test_shaping_delays_the_host_or_says_the_kernel_cannot(fault_network):
    a, b, _ = fault_network.hosts
    a.spawn([sys.executable, "-c", ECHO, a.address])
    wait_echo(b, a)
    if not fault_network.netem_available():
        with pytest.raises(FaultUnsupported, match="netem"):
            fault_network.shape(a, delay_ms=200, loss_percent=10)
        return
    fault_network.shape(a, delay_ms=200)
    answer, seconds = probe(b, a, timeout=5)
    assert answer == "hi" and seconds >= 0.4   # connect and reply each cross a's link twice


def test_everything_is_removed_even_when_the_test_fails():
    with pytest.raises(RuntimeError):
        with FaultNetwork(2) as network:
            a = network.hosts[0]
            sleeper = a.spawn(["sleep", "600"])
            network.pause(sleeper)
            tag = network.bridge
            raise RuntimeError("the test failed")
    assert sleeper.poll() is not None
    assert [n for n in leftover_namespaces() if n.startswith(tag[:-2] + "-")] == []
    assert network.hosts[0].run(["true"]).returncode != 0  # the namespace is gone


# -- zdb in a domain across hosts --------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from workbench.domain.cli import DOMAIN_PASSWORD_VARIABLE  # noqa: E402
from workbench.testing.history import CheckReport, History, check  # noqa: E402

AGENT_PORT = 48004
#: how stale a TE read may be; TEs advertise no bound yet (issue 18, item 3), so this is the target one
STALE_BOUND = 5.0


@dataclass
class DomainAcrossHosts:
    """A: broker+agent running the SM; B, C: agents running a TE each; D: the clients."""

    network: FaultNetwork
    workdir: Path
    env: dict[str, str]
    setup: dict

    @property
    def hosts(self):
        return self.network.hosts

    def workload(self, seconds: float, settle: float = 5.0, faults=None) -> tuple[History, dict]:
        """Run the writer (through B's TE) and a reader per TE for ``seconds``; ``faults()`` runs meanwhile."""
        out = self.workdir / f"history-{time.monotonic_ns()}.json"
        tes = self.setup["tes"]
        argv = [sys.executable, "-m", "workbench.testing.workload", "run", "--write", tes["te-0"],
                "--write", tes["te-1"], "--seconds", str(seconds), "--settle", str(settle), "--out", str(out)]
        for name, endpoint in tes.items():
            argv += ["--read", f"{name}={endpoint}"]
        process = self.hosts[3].spawn(argv, log=self.workdir / "workload.log", env=self.env)
        if faults is not None:
            faults()
        process.wait(seconds + settle + 120)
        assert process.returncode == 0, (self.workdir / "workload.log").read_text()[-3000:]
        return History.load(out), json.loads(out.with_suffix(".final.json").read_text())


@contextlib.contextmanager
def domain_across_hosts(workdir: Path) -> Iterator[DomainAcrossHosts]:
    """Four namespaces, agents on A (broker), B and C, the SM on A and a TE on each of B and C."""
    with FaultNetwork(4) as network:
        a, b, c, d = network.hosts
        env = {**os.environ, DOMAIN_PASSWORD_VARIABLE: "bird",
               "WORKBENCH_KNOWN_BROKERS": str(workdir / "known_brokers"),
               "PYTHONPATH": os.pathsep.join(sys.path)}
        broker = f"{a.address}:{AGENT_PORT}"
        for host, extra in ((a, ["--broker"]), (b, ["--peer", broker]), (c, ["--peer", broker])):
            host.spawn([sys.executable, "-m", "workbench", "domain", "agent", "--port", str(AGENT_PORT),
                        "--state-dir", str(workdir / host.name), "--bind", host.address,
                        "--hostname", host.address, *extra], log=workdir / f"{host.name}.log", env=env)
        out = workdir / "setup.json"
        process = d.spawn([sys.executable, "-m", "workbench.testing.workload", "setup", broker,
                           str(workdir / "archive"), "--te-peer", f"{b.address}:{AGENT_PORT}",
                           "--te-peer", f"{c.address}:{AGENT_PORT}", "--out", str(out)],
                          log=workdir / "setup.log", env=env)
        process.wait(120)
        assert process.returncode == 0, (workdir / "setup.log").read_text()[-3000:] + "".join(
            (workdir / f"{h.name}.log").read_text()[-1500:] for h in (a, b, c))
        yield DomainAcrossHosts(network, workdir, env, json.loads(out.read_text()))
    assert not [n for n in leftover_namespaces() if n.startswith(network.bridge[:-2] + "-")]


@dataclass
class ScenarioRun:
    history: History
    final: dict
    faults: int
    report: CheckReport


def run_scenario(workdir: Path, seconds: float, faults) -> ScenarioRun:
    """``faults(network, pids)`` runs during the workload; ``pids`` names the SM's and TEs' processes."""
    with domain_across_hosts(workdir) as domain:
        history, applied = domain.workload(seconds, faults=lambda: faults(domain.network, domain.setup["pids"]))
        final = {replica: {key: values[-1] if values else None for key, values in state.items()}
                 for replica, state in applied.items()}
        report = check(history, final, stale_bound=STALE_BOUND, keys=["log"], applied=applied)
        run = ScenarioRun(history, final, domain.network.fault_count, report)
    stale = report.of_kind("stale-read")
    worst = (f", worst stale read {max(v.fields['staleness'] for v in stale):.1f}s and "
             f"{max(v.fields['writes_behind'] for v in stale)} writes behind" if stale else "")
    print(f"\n{workdir.name}: operations {history.counts()}, faults {run.faults}, final {final}, "
          f"violations {report.counts()}{worst}")
    for violation in report.violations:
        if violation.kind != "stale-read":
            print(f"  {violation.kind} {violation.key}: {violation.detail}")
    return run


def test_smoke_domain_across_hosts(tmp_path):
    run = run_scenario(tmp_path, 5, lambda network, pids: None)
    assert run.history.counts().get("write:ok", 0) > 10
    assert run.report.violations == []


@pytest.fixture(scope="module")
def sm_partitioned(tmp_path_factory) -> ScenarioRun:
    """The SM's host cut off from every other host for 10 s, 5 s into a 25 s workload, then healed."""
    def faults(network: FaultNetwork, pids: dict[str, int]) -> None:
        time.sleep(5)
        network.cut_off(network.hosts[0])
        time.sleep(10)
        network.heal()

    return run_scenario(tmp_path_factory.mktemp("sm-partitioned"), 25, faults)


def test_sm_partitioned_loses_no_acknowledged_write_and_converges(sm_partitioned):
    counts = sm_partitioned.history.counts()
    assert counts.get("write:ok", 0) > 20 and counts.get("read:ok", 0) > 20 and sm_partitioned.faults == 3
    assert guaranteed_violations(sm_partitioned) == [], sm_partitioned.report.summary()


GUARANTEED = {"lost-write", "failed-write-applied", "future-read", "phantom-read", "divergence"}


def guaranteed_violations(run: ScenarioRun) -> list:
    return [v for v in run.report.violations if v.kind in GUARANTEED]


@pytest.fixture(scope="module")
def te_cut_from_sm(tmp_path_factory) -> ScenarioRun:
    """The SM's host and B (the writer's first TE) partitioned for 10 s: the writer times out, moves to C's TE."""
    def faults(network: FaultNetwork, pids: dict[str, int]) -> None:
        time.sleep(5)
        network.partition(network.hosts[0], network.hosts[1])
        time.sleep(10)
        network.heal()

    return run_scenario(tmp_path_factory.mktemp("te-cut-from-sm"), 25, faults)


def test_a_te_cut_from_its_sm_loses_no_acknowledged_write_and_converges(te_cut_from_sm):
    assert te_cut_from_sm.history.counts().get("write:ok", 0) > 50 and te_cut_from_sm.faults == 1
    assert guaranteed_violations(te_cut_from_sm) == [], te_cut_from_sm.report.summary()


@pytest.mark.xfail(strict=True, reason="issue 18 item 3: a TE cut off from its SM keeps serving stale reads")
def test_a_te_cut_from_its_sm_serves_no_read_staler_than_the_bound(te_cut_from_sm):
    assert te_cut_from_sm.report.of_kind("stale-read") == []


@pytest.mark.xfail(strict=True, reason="issue 18 item 3: a write its client gave up on is applied later")
def test_a_te_cut_from_its_sm_applies_no_write_its_client_gave_up_on(te_cut_from_sm):
    assert te_cut_from_sm.report.of_kind("zombie-write") == []


def test_delay_and_loss_on_a_te_host_lose_no_acknowledged_write(tmp_path):
    with FaultNetwork(1) as probe_network:
        if not probe_network.netem_available():
            # A kernel without sch_netem (as some sandboxes run) cannot delay or drop packets: the
            # scenario cannot run there, and the harness must say so rather than shape nothing.
            with pytest.raises(FaultUnsupported, match="netem"):
                probe_network.shape(probe_network.hosts[0], delay_ms=200, loss_percent=10)
            return

    def faults(network: FaultNetwork, pids: dict[str, int]) -> None:
        time.sleep(3)
        network.shape(network.hosts[2], delay_ms=200, loss_percent=10)
        time.sleep(15)
        network.heal()

    run = run_scenario(tmp_path, 20, faults)
    assert run.history.counts().get("write:ok", 0) > 20
    assert guaranteed_violations(run) == [], run.report.summary()


def test_kill_9_of_the_sm_agent_loses_no_write_and_serves_fresh_reads(tmp_path):
    """The agent supervising the SM dies by kill -9; the SM, in a session of its own, goes on serving."""
    def faults(network: FaultNetwork, pids: dict[str, int]) -> None:
        time.sleep(3)
        network.kill(network.hosts[0].processes[0])   # A's agent (also the broker)

    run = run_scenario(tmp_path, 12, faults)
    assert run.faults == 1 and run.history.counts().get("write:ok", 0) > 50
    assert run.report.violations == [], run.report.summary()


def test_a_paused_te_catches_up_and_loses_no_write(tmp_path):
    """C's TE stopped (SIGSTOP) for 8 s while writes go on through B's TE, then continued."""
    def faults(network: FaultNetwork, pids: dict[str, int]) -> None:
        time.sleep(3)
        network.pause(pids["te-1"])
        time.sleep(8)
        network.resume(pids["te-1"])

    run = run_scenario(tmp_path, 16, faults)
    assert run.faults == 1 and run.history.counts().get("write:ok", 0) > 50
    assert guaranteed_violations(run) == [], run.report.summary()
