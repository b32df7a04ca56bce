"""Faults across hosts: the namespace harness itself, then zdb in a domain under partitions and loss."""

from __future__ import annotations

import sys
import time

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
