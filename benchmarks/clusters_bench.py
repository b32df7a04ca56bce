"""Clusters over SSH: provisioning wall time for 1 and 3 nodes per datastore, and SSH command round trips.

Run ``python benchmarks/clusters_bench.py`` (a few minutes; ``--quick`` for one round of each
measurement). Everything runs on 127.0.0.1 and is started and stopped here: an OpenSSH sshd on a
free port (the harness's ``SshServer``: its own host key, key authentication only) and a pool of
three static "hosts" on it, each with its own base directory, as the test fixtures use.

What is measured, and against what:

1. **Provisioning** with the static-hosts provider, over SSH with key auth and the pinned host key:
   wall time from ``create_cluster`` to the cluster being active (servers placed, datastore
   configured and started, replication verified by a write read on every replica) for a cluster
   of 1 and a cluster of 3, for Redis 7, MariaDB (mysql manager) and PostgreSQL 15. The instances
   of a cluster are built in parallel, so the ratio 3-node / 1-node shows what parallelism saves:
   target <= 1.5 (a serial build would be about 3). A cluster of 2 is measured as a reference:
   a replica must wait for its primary to answer before it can copy it (PostgreSQL's
   ``pg_basebackup`` and MariaDB's seed dump need a running primary), so 2-node / 1-node is the
   part of the ratio that parallel work cannot remove; the rest of 3-node / 1-node is a third
   instance competing for the cores. Each cluster is destroyed before the next one is made; the
   time of the destroy is printed too.
2. **SSH command round trip**: the project's ``SshConnection`` running ``true`` on a kept session
   (fed to a long-lived remote ``sh``, so the login shell is paid once per remote shell, not per
   command) against the raw OpenSSH client running ``true`` over a multiplexed master connection
   (``ssh -S socket``: an exec channel, and so a login shell, per command). Also a fresh
   connection per command for both (``SshConnection`` opened, ``true``, closed; plain
   ``ssh HOST true``), where the handshake and the login shell dominate.

``--profile`` also prints, for each build, every SSH command and file transfer (start, duration,
instance thread) and the CPU seconds the build cost (commands over SSH, datastore servers, this
process): where a 3-node build waits on its primary, and how much more CPU it needs than a 1-node one.

Figures are printed one per line; ratios come from the same run; targets show PASS or MISS.
Nothing here is run by the test suite.
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Cleanup, Report, machine_facts  # noqa: E402

DATASTORES = (("redis", "redis-7"), ("mysql", "mysql-10.11"), ("postgresql", "postgresql-15"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of each provisioning measurement, "
                        "fewer SSH round trips")
    parser.add_argument("--rounds", type=int, default=None, help="provisioning rounds per size (default 3, quick 1)")
    parser.add_argument("--datastores", default=",".join(m for m, _ in DATASTORES),
                        help="comma-separated managers to measure (default: redis,mysql,postgresql)")
    parser.add_argument("--ssh-count", type=int, default=None, help="SSH round trips per measurement "
                        "(default 300, quick 100)")
    parser.add_argument("--profile", action="store_true", help="also print every SSH command of each build "
                        "(start, duration, instance thread) and the time per step")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.ssh_count = args.ssh_count or (100 if args.quick else 300)
    return args


# -- provisioning ------------------------------------------------------------------------------------
class CommandTimeline:
    """Records every command and file transfer the project's SSH sessions make (start, duration,
    thread), by wrapping ``SshConnection``'s methods: they still run, only timed."""

    def __init__(self) -> None:
        from workbench.clusters.connection import SshConnection

        self.events: list[tuple[float, float, str, str]] = []
        self.origin = time.perf_counter()
        self._originals = {name: getattr(SshConnection, name) for name in ("_execute", "upload", "download")}
        timeline = self

        def timed(name: str, describe: Callable[..., str]):
            original = self._originals[name]

            def wrapper(conn, *args, **kwargs):
                began = time.perf_counter()
                try:
                    return original(conn, *args, **kwargs)
                finally:
                    import threading
                    timeline.events.append((began - timeline.origin, time.perf_counter() - began,
                                            threading.current_thread().name, describe(*args)))
            return wrapper

        SshConnection._execute = timed("_execute", lambda command, *rest: command)
        SshConnection.upload = timed("upload", lambda local, remote, *rest: f"(sftp put) {remote}")
        SshConnection.download = timed("download", lambda remote, *rest: f"(sftp get) {remote}")

    def restart(self) -> None:
        self.events.clear()
        self.origin = time.perf_counter()

    def print(self, title: str, roots: list[str]) -> None:
        print(f"  -- {title}: {len(self.events)} SSH commands/transfers "
              f"(busy {sum(e[1] for e in self.events):.2f} s summed over threads)")
        for start, took, thread, what in sorted(self.events):
            for root in roots:
                what = what.replace(root, "…")
            print(f"  {start:7.3f} +{took:6.3f}  {thread[-12:]:>12}  {what[:150]}")

    def close(self) -> None:
        from workbench.clusters.connection import SshConnection

        for name, original in self._originals.items():
            setattr(SshConnection, name, original)


class CpuMeter:
    """CPU seconds spent by a build: the commands sshd ran (its process tree, reaped children
    included), the datastore servers started (processes naming ``root``, and their children) and
    this process (the task runner, paramiko, SQLite). Sampled from /proc before and after."""

    def __init__(self, sshd_pid: int, root: str) -> None:
        self.sshd_pid, self.root = sshd_pid, root
        self.ticks = os.sysconf("SC_CLK_TCK")

    def _processes(self) -> dict[int, tuple[int, float, str]]:
        """pid -> (ppid, cpu seconds with reaped children, command line)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 1-based from state
            cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / self.ticks
            found[int(entry)] = (int(fields[1]), cpu, cmdline)
        return found

    def sample(self) -> tuple[float, float, float]:
        processes = self._processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in processes.items():
            children.setdefault(ppid, []).append(pid)

        def tree(pid: int) -> set[int]:
            seen, todo = set(), [pid]
            while todo:
                current = todo.pop()
                if current not in seen:
                    seen.add(current)
                    todo += children.get(current, [])
            return seen

        commands = tree(self.sshd_pid)
        servers: set[int] = set()
        for pid, (_, _, cmdline) in processes.items():
            if self.root in cmdline and pid not in commands and pid != os.getpid():
                servers |= tree(pid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (sum(processes[p][1] for p in commands if p in processes),
                sum(processes[p][1] for p in servers - commands if p in processes),
                usage.ru_utime + usage.ru_stime)


def provisioning(report: Report, args: argparse.Namespace, runner, wanted: list[str],
                 meter: CpuMeter | None = None) -> None:
    timeline = CommandTimeline() if args.profile else None
    roots = sorted((h.base_dir for h in runner.settings.static_hosts), key=len, reverse=True)
    for manager, datastore in DATASTORES:
        if manager not in wanted:
            continue
        times: dict[int, list[float]] = {1: [], 2: [], 3: []}
        destroys: list[float] = []
        for round_number in range(args.rounds):
            for size in (1, 3, 2):  # interleaved, so drift of a shared machine hits every size alike
                name = f"b-{manager[:5]}-{size}-{round_number}"
                if timeline is not None:
                    timeline.restart()
                cpu_before = meter.sample() if meter is not None else None
                began = time.perf_counter()
                runner.create_cluster(name, datastore, size, "static").wait(timeout=900)
                times[size].append(time.perf_counter() - began)
                if meter is not None and cpu_before is not None:
                    after = meter.sample()
                    commands, servers, client = (a - b for a, b in zip(after, cpu_before))
                    print(f"  {name}: wall {times[size][-1]:.2f} s; CPU: commands over SSH {commands:.2f} s, "
                          f"datastore servers {servers:.2f} s, this process {client:.2f} s "
                          f"(sum {commands + servers + client:.2f} s on {os.cpu_count()} cores; "
                          f"load avg {os.getloadavg()[0]:.2f})", flush=True)
                if timeline is not None:
                    timeline.print(f"{name}: built in {times[size][-1]:.2f} s", roots)
                if timeline is not None:
                    timeline.restart()
                began = time.perf_counter()
                runner.destroy_cluster(name).wait(timeout=300)
                destroys.append(time.perf_counter() - began)
                if timeline is not None:
                    timeline.print(f"{name}: destroyed in {destroys[-1]:.2f} s", roots)
        one, two, three = (statistics.median(times[size]) for size in (1, 2, 3))
        spread = lambda values: f"(rounds {min(values):.2f}..{max(values):.2f} s)" if len(values) > 1 else ""
        report.seconds("1", f"{datastore}: provision a cluster of 1 (median)", one, spread(times[1]))
        report.seconds("1", f"{datastore}: provision a cluster of 3, in parallel (median)", three, spread(times[3]))
        report.seconds("1", f"{datastore}: provision a cluster of 2 (median, reference)", two, spread(times[2]))
        report.seconds("1", f"{datastore}: destroy (median over all sizes)", statistics.median(destroys))
        report.ratio("1", f"{datastore}: 3-node / 1-node provisioning time", three / one, at_most=1.5)
        # A primary and one replica: the chain a replica waits on (primary up, then follow), with
        # one instance less competing for the cores. With a core per instance, 3 nodes would take
        # this long: the part of the ratio that parallelism cannot remove.
        report.ratio("1", f"{datastore}: 2-node / 1-node (the primary -> replica chain)", two / one)


# -- SSH round trips ---------------------------------------------------------------------------------
def per_call(action: Callable[[], object], count: int) -> float:
    """Median seconds per call of ``action`` over ``count`` calls (after a few warm-up calls)."""
    for _ in range(min(5, count)):
        action()
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        action()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def ssh_round_trips(report: Report, args: argparse.Namespace, sshd, host_key: str, workdir: Path,
                    cleanup: Cleanup) -> None:
    from workbench.clusters.connection import SshConnection

    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {host_key}\n")
    raw = ["ssh", "-p", str(sshd.port), "-i", str(sshd.client_key_path), "-o", "BatchMode=yes",
           "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
           "-o", "LogLevel=ERROR", "-F", "/dev/null", f"{sshd.username}@{sshd.host}"]

    def project_connection() -> SshConnection:
        return SshConnection(sshd.host, sshd.port, sshd.username, key_filename=str(sshd.client_key_path),
                             known_hosts=workdir / "project_known_hosts", trusted_host_key=host_key,
                             timeout=30, connect_timeout=15)

    # kept session: one exec channel per command
    connection = project_connection().connect()
    cleanup.add(connection.close)
    project_kept = per_call(lambda: connection.run(["true"]), args.ssh_count)
    control = workdir / "ssh-control"
    master = subprocess.Popen([*raw[:-1], "-M", "-S", str(control), "-N", raw[-1]], stdin=subprocess.DEVNULL)
    cleanup.add(lambda: (master.terminate(), master.wait(10)))
    deadline = time.monotonic() + 15
    while subprocess.run([*raw[:-1], "-S", str(control), "-O", "check", raw[-1]], capture_output=True).returncode:
        if time.monotonic() > deadline or master.poll() is not None:
            raise RuntimeError("the ssh master connection did not come up")
        time.sleep(0.05)
    multiplexed = [*raw[:-1], "-S", str(control), raw[-1], "true"]
    raw_kept = per_call(lambda: subprocess.run(multiplexed, check=True, stdin=subprocess.DEVNULL), args.ssh_count)
    report.seconds("2", "SshConnection.run(['true']) on a kept session (median)", project_kept)
    report.seconds("2", "ssh -S master HOST true, multiplexed (median)", raw_kept)
    report.ratio("2", "kept session: SshConnection / OpenSSH (lower is better)", project_kept / raw_kept)

    # What the login shell itself costs: sshd runs every command as `SHELL -c COMMAND`, and bash
    # started by sshd (SSH_CLIENT set) reads ~/.bashrc, whatever that does (pyenv init...).
    shell = pwd.getpwnam(sshd.username).pw_shell or "/bin/sh"
    env = {"HOME": os.path.expanduser("~"), "PATH": os.environ.get("PATH", ""), "USER": sshd.username,
           "SSH_CLIENT": f"{sshd.host} 50000 {sshd.port}"}
    startup = per_call(lambda: subprocess.run([shell, "-c", "true"], env=env, check=True, stdin=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL), max(10, args.ssh_count // 10))
    report.seconds("2", f"the login shell alone: {shell} -c true as sshd starts it (median)", startup,
                   "(in every figure of this section)")

    # a fresh connection per command: the handshake dominates
    fresh = max(10, args.ssh_count // 10)

    def project_fresh() -> None:
        with project_connection() as conn:
            conn.run(["true"])

    project_new = per_call(project_fresh, fresh)
    raw_new = per_call(lambda: subprocess.run([*raw, "true"], check=True, stdin=subprocess.DEVNULL), fresh)
    report.seconds("2", "SshConnection: connect, run 'true', close (median)", project_new)
    report.seconds("2", "ssh HOST true, new connection each time (median)", raw_new)
    report.ratio("2", "new connection: SshConnection / OpenSSH (lower is better)", project_new / raw_new)


# -- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from workbench.clusters.settings import Settings, StaticHost
    from workbench.testing.clusters import running_clusters
    from workbench.testing.services import SshServer, traversable_tempdir

    args = parse_args(argv)
    wanted = [w.strip() for w in args.datastores.split(",") if w.strip()]
    began = time.monotonic()
    workdir = traversable_tempdir("wb-clusters-bench-")
    cleanup = Cleanup()
    report = Report(width=66)
    print(f"clusters benchmark ({'quick' if args.quick else 'full'}: {args.rounds} provisioning round(s) per "
          f"size, {args.ssh_count} SSH round trips)")
    for line in machine_facts(redis_server="redis-server"):
        print(line)
    try:
        sshd = SshServer(workdir / "sshd").start()
        cleanup.add(sshd.stop)
        version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        print(f"sshd on {sshd.address} ({version}); static pool of 3 hosts on it, key auth, pinned host key",
              flush=True)
        host_key = " ".join(Path(f"{sshd.host_key_path}.pub").read_text().split()[:2])
        hosts = []
        for n in range(1, 4):
            base = workdir / f"host{n}"
            base.mkdir(mode=0o755)
            hosts.append(StaticHost(address=sshd.host, ssh_port=sshd.port, user=sshd.username,
                                    key_file=str(sshd.client_key_path), host_key=host_key, base_dir=str(base),
                                    name=f"host{n}"))
        settings = Settings(master_key="bench-master-key", state_dir=str(workdir / "state"),
                            instances_dir=str(workdir / "instances"), provider="static",
                            static_hosts=tuple(hosts), known_hosts=str(workdir / "state" / "known_hosts"))
        meter = CpuMeter(sshd.process.pid, str(workdir)) if args.profile else None
        with running_clusters(settings) as runner:
            provisioning(report, args, runner, wanted, meter)
        ssh_round_trips(report, args, sshd, host_key, workdir, cleanup)
    finally:
        cleanup.run()
        shutil.rmtree(workdir, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"targets: {len(report.passes)} PASS, {len(report.misses)} MISS"
          + (f" ({'; '.join(report.misses)})" if report.misses else "")
          + f"; run took {time.monotonic() - began:.0f} s; load avg now {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
