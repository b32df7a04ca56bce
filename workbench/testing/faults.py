"""Hosts as network namespaces on a bridge, with faults a test injects: partitions, delay, loss, pause, kill -9.

A :class:`FaultNetwork` (root only) creates ``count`` namespaces, each with one veth plugged into a
bridge of its own and an address in ``10.231.X.0/24``; the bridge has no address, so nothing in the
namespaces can reach the machine's own network and tests never reach beyond what they created::

    with FaultNetwork(3) as net:
        a, b, c = net.hosts
        server = a.spawn(["python3", "-m", "http.server", "--bind", a.address, "8000"], log=tmp / "a.log")
        net.partition(a, b)        # a and b drop each other's frames; c still sees both
        net.heal()
        net.pause(server); net.resume(server); net.kill(server)

How each fault is made, and why:

- ``partition(a, b)``: a permanent neighbour entry on each side that points the other's address at a
  MAC no port has. Frames are flooded by the bridge and dropped by every receiver, so the sender sees
  silence (timeouts), as on a real cut link. Routes (``blackhole``) were tried and rejected: they fail
  ``connect`` at once with EINVAL, which no real partition does. iptables is absent on this image.
- ``isolate(a)``: the bridge side of a's veth is set down: a loses carrier and reaches nobody.
- ``shape(a, delay_ms, loss_percent)``: ``tc qdisc ... netem`` on both ends of a's veth. Kernels
  without the ``sch_netem`` module (some minimal VM kernels) raise :class:`FaultUnsupported`.
- ``pause``/``resume``/``kill``: SIGSTOP, SIGCONT (to the group of a process spawned here, or one pid,
  e.g. a TE an agent started) and SIGKILL of the process alone.

``close()`` (or leaving the ``with``) kills every process left in each namespace (``ip netns pids``,
so children that started sessions of their own go too), then removes the veths, the namespaces and
the bridge; it runs every step even when one fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from workbench.errors import ServiceError
from workbench.testing.process import require_binary, running_as_root

__all__ = ["FaultError", "FaultUnsupported", "FaultEvent", "Host", "FaultNetwork", "fault_network",
           "leftover_namespaces"]

#: a MAC no port on the bridge has (locally administered, all zero otherwise): frames sent to it vanish
_NOWHERE_MAC = "02:00:00:00:00:00"
_NAME_PREFIX = "wbf"


class FaultError(ServiceError):
    """An ``ip``/``tc`` command of the fault harness failed (fields: command, stderr)."""


class FaultUnsupported(FaultError):
    """The kernel lacks what a fault needs, e.g. the netem queueing discipline (fields: fault, stderr)."""


@dataclass(frozen=True)
class FaultEvent:
    """One fault injected or healed, with the monotonic time it took effect."""

    at: float
    kind: str
    hosts: tuple[str, ...]
    detail: str = ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise FaultError(f"ip {' '.join(args)} failed: {result.stderr.strip()}",
                         command=["ip", *args], stderr=result.stderr.strip())
    return result


def leftover_namespaces(prefix: str = _NAME_PREFIX) -> list[str]:
    """Names of network namespaces starting with ``prefix`` (what a clean teardown leaves: none)."""
    listed = _ip("netns", "list").stdout.splitlines()
    return [line.split()[0] for line in listed if line.startswith(prefix)]


@dataclass
class Host:
    """One namespace: its name, address and the processes the test started in it."""

    network: "FaultNetwork"
    index: int
    namespace: str
    address: str
    veth: str  # the bridge side; inside the namespace the interface is eth0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so it runs inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespace to completion (output captured)."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)

    def spawn(self, argv: Sequence[str], log: Path | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the namespace in a session of its own (so pause/kill reach its group)."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(self.command(argv), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        finally:
            if log is not None:
                out.close()  # the child holds its own descriptor
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        """Every process living in the namespace, whoever started it."""
        return [int(p) for p in _ip("netns", "pids", self.namespace, check=False).stdout.split()]


class FaultNetwork:
    """``count`` hosts as network namespaces on a private bridge; faults and their log in :attr:`events`."""

    def __init__(self, count: int, subnet: int | None = None) -> None:
        if not running_as_root():
            raise FaultUnsupported("network namespaces need root", fault="netns")
        require_binary("ip", "iproute2")
        require_binary("tc", "iproute2")
        # Names carry our pid so two runs on one machine never meet; interface names stay <= 15 chars.
        self._tag = f"{_NAME_PREFIX}{os.getpid()}"
        self.bridge = f"{self._tag}br"
        self.subnet = subnet if subnet is not None else os.getpid() % 250
        self.hosts: list[Host] = []
        self.events: list[FaultEvent] = []
        self._lock = threading.Lock()
        self._partitions: set[tuple[int, int]] = set()
        self._isolated: set[int] = set()
        self._shaped: set[int] = set()
        self._netem: bool | None = None
        try:
            self._create(count)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def _create(self, count: int) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for index in range(count):
            namespace, veth = f"{self._tag}-{index}", f"{self._tag}h{index}"
            address = f"10.231.{self.subnet}.{index + 1}"
            _ip("netns", "add", namespace)
            host = Host(self, index, namespace, address, veth)
            self.hosts.append(host)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def __enter__(self) -> "FaultNetwork":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process in the namespaces, remove veths, namespaces and bridge (each step runs)."""
        for host in self.hosts:
            for process in host.processes:
                self._signal(process, signal.SIGCONT)  # a stopped group would not die of SIGTERM
            for pid in host.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for process in host.processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for host in self.hosts:
            _ip("link", "del", host.veth, check=False)
            _ip("netns", "del", host.namespace, check=False)
        _ip("link", "del", self.bridge, check=False)

    # -- network faults ----------------------------------------------------------------------
    def _record(self, kind: str, hosts: Sequence[Host], detail: str = "") -> None:
        with self._lock:
            self.events.append(FaultEvent(time.monotonic(), kind, tuple(h.name for h in hosts), detail))

    @property
    def fault_count(self) -> int:
        """Faults injected so far (heals and resumes not counted)."""
        return sum(1 for event in self.events if event.kind not in ("heal", "resume"))

    def partition(self, a: Host, b: Host) -> None:
        """a and b no longer exchange packets (silently, both ways); the others still reach both."""
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.namespace, "neigh", "replace", dst.address, "lladdr", _NOWHERE_MAC,
                "dev", "eth0", "nud", "permanent")
        self._partitions.add((a.index, b.index))
        self._record("partition", (a, b))

    def cut_off(self, host: Host, others: Sequence[Host] | None = None) -> None:
        """``host`` partitioned from each of ``others`` (default: every other host)."""
        for other in others if others is not None else [h for h in self.hosts if h is not host]:
            self.partition(host, other)

    def isolate(self, host: Host) -> None:
        """``host`` loses carrier: the bridge side of its veth goes down."""
        _ip("link", "set", host.veth, "down")
        self._isolated.add(host.index)
        self._record("isolate", (host,))

    def shape(self, host: Host, delay_ms: float = 0.0, loss_percent: float = 0.0) -> None:
        """Delay and loss on everything ``host`` sends and receives (netem on both ends of its veth)."""
        spec = ["delay", f"{delay_ms}ms", "loss", f"{loss_percent}%"]
        for namespace, dev in ((host.namespace, "eth0"), (None, host.veth)):
            prefix = ["-n", namespace] if namespace else []
            result = subprocess.run(["tc", *prefix, "qdisc", "replace", "dev", dev, "root", "netem", *spec],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                if "unknown" in result.stderr.lower():
                    raise FaultUnsupported("this kernel has no netem qdisc (sch_netem)", fault="netem",
                                           stderr=result.stderr.strip())
                raise FaultError(f"tc netem on {dev} failed: {result.stderr.strip()}",
                                 command=result.args, stderr=result.stderr.strip())
        self._shaped.add(host.index)
        self._record("shape", (host,), " ".join(spec))

    def netem_available(self) -> bool:
        """Whether ``shape`` can work here (tried once on the first host's loopback)."""
        if self._netem is None:
            result = subprocess.run(["tc", "-n", self.hosts[0].namespace, "qdisc", "replace", "dev", "lo",
                                     "root", "netem", "delay", "0ms"], capture_output=True, text=True)
            self._netem = result.returncode == 0
            subprocess.run(["tc", "-n", self.hosts[0].namespace, "qdisc", "del", "dev", "lo", "root"],
                           capture_output=True)
        return self._netem

    def heal(self) -> None:
        """Undo every partition, isolation and shaping."""
        for a, b in sorted(self._partitions):
            for src, dst in ((self.hosts[a], self.hosts[b]), (self.hosts[b], self.hosts[a])):
                _ip("-n", src.namespace, "neigh", "del", dst.address, "dev", "eth0", check=False)
        for index in sorted(self._isolated):
            _ip("link", "set", self.hosts[index].veth, "up")
        for index in sorted(self._shaped):
            host = self.hosts[index]
            subprocess.run(["tc", "-n", host.namespace, "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
            subprocess.run(["tc", "qdisc", "del", "dev", host.veth, "root"], capture_output=True)
        self._partitions.clear()
        self._isolated.clear()
        self._shaped.clear()
        self._record("heal", tuple(self.hosts))

    # -- process faults ----------------------------------------------------------------------
    # A process is a Popen the host spawned or the pid of one it runs (e.g. a TE its agent started).
    @staticmethod
    def _pid(process: subprocess.Popen[bytes] | int) -> int:
        return process if isinstance(process, int) else process.pid

    @classmethod
    def _signal(cls, process: subprocess.Popen[bytes] | int, signum: int) -> None:
        pid = cls._pid(process)
        try:
            # the whole group when the process leads one (what spawn starts), else the process alone
            os.killpg(pid, signum) if os.getpgid(pid) == pid else os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _host_of(self, process: subprocess.Popen[bytes] | int) -> tuple[Host, ...]:
        pid = self._pid(process)
        return tuple(h for h in self.hosts if pid in h.pids())

    def pause(self, process: subprocess.Popen[bytes] | int) -> None:
        """SIGSTOP (to its group if it leads one): it holds its sockets but answers nothing."""
        self._record("pause", self._host_of(process), str(self._pid(process)))
        self._signal(process, signal.SIGSTOP)

    def resume(self, process: subprocess.Popen[bytes] | int) -> None:
        """SIGCONT (to its group if it leads one)."""
        self._signal(process, signal.SIGCONT)
        self._record("resume", self._host_of(process), str(self._pid(process)))

    def kill(self, process: subprocess.Popen[bytes] | int) -> None:
        """kill -9 of the process alone (not its group: a supervisor's children survive, as in a crash)."""
        hosts = self._host_of(process)
        try:
            os.kill(self._pid(process), signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not isinstance(process, int):
            process.wait(10)
        self._record("kill", hosts, str(self._pid(process)))


@pytest.fixture
def fault_network() -> Iterator[FaultNetwork]:
    """Three hosts on a private bridge, removed after the test even when it fails."""
    with FaultNetwork(3) as network:
        yield network
    leftovers = [name for name in leftover_namespaces() if name.startswith(network._tag + "-")]
    assert not leftovers, f"namespaces left after teardown: {leftovers}"
