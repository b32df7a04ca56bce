"""The reconciler: keeps every started description true, run by the acting broker.

The acting broker (the lowest id among linked brokers) compares each started description with the
processes its database runs and starts what is missing: the primary storage manager on the peer
that owns its archive (pinned there the first time), standby storage managers and transaction
engines on available peers (distinct ones when the template says so). It stops transaction
engines beyond the template's count. Every step is told to clients as ``reconciler_action``
events, and the description's status (STARTING, RUNNING, DEGRADED) as ``description_changed``.
The other brokers hold the same descriptions, so when the acting broker dies the next one acts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from workbench.domain.model import QUIESCED, RUNNING, SM, STARTING, TE, DescriptionRecord, ProcessRecord
from workbench.domain.requests import AUTO, StartProcess, StopProcess
from workbench.domain.templates import Slot, Template, find_template
from workbench.errors import DomainError

if TYPE_CHECKING:
    from workbench.domain.broker import DomainState

log = logging.getLogger(__name__)

#: a pass runs at least this often (and at once when something changes)
PASS_SECONDS = 1.0
#: a start whose process has not shown up yet counts as running for this long
START_GRACE_SECONDS = 10.0
#: after a failed start, leave the description alone this long
BACKOFF_SECONDS = 2.0
LIVE = (STARTING, RUNNING, QUIESCED)


class Reconciler:
    """Runs reconciliation passes on a thread of its own while the broker acts for the domain."""

    def __init__(self, state: "DomainState") -> None:
        self.state = state
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reconciler-{state.me.id}", daemon=True)
        self._started: dict[str, tuple[float, str, str]] = {}  # process id -> (when, database, slot kind)
        self._backoff: dict[str, float] = {}
        self._waiting_said: dict[str, str] = {}  # the last "waiting" detail told, so it is told once
        self._replacing: set[str] = set()  # processes asked to stop (followers of a gone SM, extra TEs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(PASS_SECONDS)
            self._wake.clear()
            if self._stop.is_set() or not self.state.replication.is_acting():
                continue
            for record in self.state.descriptions.live():
                if not record.started or self._backoff.get(record.name, 0) > time.monotonic():
                    continue
                try:
                    self.reconcile(record)
                except DomainError as exc:
                    self._backoff[record.name] = time.monotonic() + BACKOFF_SECONDS
                    self._tell_once(record, "start_failed", exc.message)  # retried quietly after the backoff
                    self._set_status(record, "DEGRADED")
                except Exception:  # noqa: BLE001 - one bad pass must not end self-healing
                    log.exception("reconciler pass for %s failed", record.name)

    # -- one description ------------------------------------------------------------------------
    def reconcile(self, record: DescriptionRecord) -> None:
        template = find_template(record.template)
        variables = template.resolve(record.variables)
        slots = template.slots(variables)
        state = self.state
        with state.lock:
            live = [p.copy() for p in state.processes.values() if p.database == record.name and p.status in LIVE]
            peers = sorted(state.peers)
            load = {peer: sum(1 for p in state.processes.values() if p.peer == peer) for peer in peers}
            everywhere = set(state.processes)
        now = time.monotonic()
        known = {p.id for p in live}
        self._started = {pid: item for pid, item in self._started.items()
                         if pid not in known and now - item[0] < START_GRACE_SECONDS}
        pending = [kind for _, database, kind in self._started.values() if database == record.name]

        primaries = [p for p in live if p.type == SM and not p.standby]
        standbys = [p for p in live if p.type == SM and p.standby]
        engines = [p for p in live if p.type == TE]
        if not primaries:
            if "primary" not in pending:
                self._start_primary(record, template, variables, peers, load)
            self._set_status(record, "DEGRADED" if self._waiting_said.get(record.name) else STARTING)
            return
        primary = primaries[0]
        if primary.status == STARTING:
            self._set_status(record, STARTING)
            return
        stale = {p.id for p in [*standbys, *engines] if p.primary and p.primary != primary.endpoint}
        for follower in [p for p in [*standbys, *engines] if p.id in stale - self._replacing]:
            # It follows a storage manager that is gone (restarted on a new port): replace it.
            self._replacing.add(follower.id)
            self.state.reconciler_action(record.name, "replace",
                                         f"{follower.type} {follower.id} follows a storage manager that is gone")
            self.state.handlers.command(follower.peer, StopProcess(follower.id))
        self._replacing &= everywhere
        standbys = [p for p in standbys if p.id not in stale]
        engines = [p for p in engines if p.id not in stale]
        complete = True
        for slot in [s for s in slots if s.standby][len(standbys) + pending.count("standby"):]:
            complete = False
            used = {primary.peer, *(p.peer for p in standbys)}
            peer = self._choose(peers, load, avoid=used, distinct=True)
            if peer is None:
                self._waiting(record, f"no peer free for standby {slot.name}")
                continue
            self._start(record, slot, peer, "standby", standby=True)
            standbys.append(ProcessRecord(id="", peer=peer, database=record.name, type=SM, hostname="", port=0,
                                          pid=0, standby=True))
        wanted = template.engines(variables)
        missing = wanted - len(engines) - pending.count("engine")
        for index in range(max(0, missing)):
            complete = False
            slot = Slot(f"te{len(engines) + index + 1}", TE)
            peer = self._engine_peer(template, variables, primary, engines, peers, load)
            if peer is None:
                self._waiting(record, f"no peer free for transaction engine {slot.name}")
                break
            self._start(record, slot, peer, "engine")
            engines.append(ProcessRecord(id="", peer=peer, database=record.name, type=TE, hostname="", port=0, pid=0))
        if missing < 0:
            for extra in sorted((e for e in engines if e.id), key=lambda e: e.id)[wanted:]:
                if extra.id in self._replacing:
                    continue  # asked already; it is on its way out
                self._replacing.add(extra.id)
                self.state.reconciler_action(record.name, "stop", f"transaction engine {extra.id} beyond {wanted}")
                self.state.handlers.command(extra.peer, StopProcess(extra.id))
        running = all(p.status in (RUNNING, QUIESCED) for p in [primary, *standbys, *engines] if p.id)
        if complete and running and missing <= 0:
            self._waiting_said.pop(record.name, None)
            self._set_status(record, RUNNING)
        elif self._waiting_said.get(record.name):
            self._set_status(record, "DEGRADED")
        else:
            self._set_status(record, STARTING)

    def _start_primary(self, record: DescriptionRecord, template: Template, variables: dict[str, str],
                       peers: list[str], load: dict[str, int]) -> None:
        peer = record.placements.get("sm1")
        if peer is None:
            peer = variables.get("HOST") or self._choose(peers, load, avoid=set(), distinct=False)
            if peer not in peers:
                raise DomainError("the peer HOST names is not in the domain", description=record.name, peer=peer)
            record = self.state.descriptions.change(record.name, placements={**record.placements, "sm1": peer})
            self.state.description_written(record)
        if peer not in peers:
            self._waiting(record, f"the peer {peer} that owns the archive is not in the domain")
            return
        self._start(record, Slot("sm1", SM), peer, "primary", archive=record.archive_dir or None, initialize=AUTO)

    def _engine_peer(self, template: Template, variables: dict[str, str], primary: ProcessRecord,
                     engines: list[ProcessRecord], peers: list[str], load: dict[str, int]) -> str | None:
        if template.single_peer:
            return primary.peer
        return self._choose(peers, load, avoid={e.peer for e in engines}, distinct=template.distinct_peers)

    @staticmethod
    def _choose(peers: list[str], load: dict[str, int], avoid: set[str], distinct: bool) -> str | None:
        """The least busy peer, skipping ``avoid`` (only preferred, unless ``distinct``)."""
        free = [p for p in peers if p not in avoid]
        candidates = free or ([] if distinct else peers)
        if not candidates:
            return None
        return min(candidates, key=lambda p: (load.get(p, 0), p))

    def _start(self, record: DescriptionRecord, slot: Slot, peer: str, kind: str, archive: str | None = None,
               initialize: str | None = None, standby: bool = False) -> None:
        options = (("--dba-user", record.dba_user), ("--dba-password", record.dba_password)) if slot.type == TE else ()
        request = StartProcess(peer, record.name, slot.type, archive=archive, initialize=initialize,
                               standby=standby, options=options)
        what = {"primary": "storage manager", "standby": "standby storage manager",
                "engine": "transaction engine"}[kind]
        if not self.state.descriptions.get(record.name).started:
            return  # stopped while this pass ran
        self.state.reconciler_action(record.name, "start", f"{what} {slot.name} on {peer}")
        response = self.state.handlers.start_process(request)  # its own DomainError (no peer...) goes up as is
        try:
            process = request.parse_reply(response)
        except DomainError as exc:  # the agent's refusal, told with what the reconciler tried
            raise DomainError(f"{what} {slot.name} on {peer} did not start: {exc.message}",
                              description=record.name, peer=peer) from None
        self._waiting_said.pop(record.name, None)
        self._started[process.id] = (time.monotonic(), record.name, kind)
        load_note = f"{what} {slot.name} started on {peer} (pid {process.pid})"
        self.state.reconciler_action(record.name, "started", load_note)

    def _waiting(self, record: DescriptionRecord, detail: str) -> None:
        self._tell_once(record, "waiting", detail)

    def _tell_once(self, record: DescriptionRecord, action: str, detail: str) -> None:
        """Tell clients why the description cannot be made true, once per reason (not every pass)."""
        if self._waiting_said.get(record.name) != f"{action}: {detail}":
            self._waiting_said[record.name] = f"{action}: {detail}"
            self.state.reconciler_action(record.name, action, detail)

    def _set_status(self, record: DescriptionRecord, status: str) -> None:
        current = self.state.descriptions.get(record.name)
        if current.status != status and current.started:
            self.state.description_written(self.state.descriptions.change(record.name, status=status))
