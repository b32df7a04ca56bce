"""A broker's answers to client requests, and the routing of commands to the peer that runs them.

Each request type of ``workbench.domain.requests`` has one handler here, in one table keyed by
the request's ``TYPE``. A handler reads and changes the broker's ``DomainState`` and answers a
``<Response>``; a ``DomainError`` it raises is answered in the error envelope. Commands for a
process go to its peer: this broker's own agent, an agent attached here, or the broker the peer is
attached to (which passes it on).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from workbench.domain.errors import DescriptionError, NoSuchDatabaseError, NoSuchProcessError, ProcessStartError
from workbench.domain.model import QUIESCED, RUNNING, SM, STOPPED, TE
from workbench.domain.protocol import Message
from workbench.domain.requests import (
    CreateDescription,
    DeleteDescription,
    QuiesceDatabase,
    QuiesceProcess,
    Request,
    StartDescription,
    StartProcess,
    StopDescription,
    StopProcess,
    UnquiesceDatabase,
    UpdateDescription,
    error_reply,
    ok_reply,
    parse_request,
)
from workbench.domain.templates import find_template
from workbench.errors import DomainError

if TYPE_CHECKING:
    from workbench.domain.broker import DomainState

log = logging.getLogger(__name__)

#: how long stop_description waits for the database's processes to leave
STOP_WAIT_SECONDS = 30.0
#: how long a TE's start waits for its database's storage manager to finish starting
PRIMARY_WAIT_SECONDS = 30.0


class RequestHandlers:
    """The broker's request table (``TYPE`` -> handler) and the command routing the handlers share."""

    def __init__(self, state: "DomainState") -> None:
        self.state = state
        self._turn = -1  # round robin over a database's TEs in locate()
        self.table: dict[str, Callable[[Any], Message]] = {
            StartProcess.TYPE: self.start_process, StopProcess.TYPE: self.stop_process,
            QuiesceDatabase.TYPE: self.quiesce_database, UnquiesceDatabase.TYPE: self.quiesce_database,
            CreateDescription.TYPE: self.create_description, UpdateDescription.TYPE: self.update_description,
            DeleteDescription.TYPE: self.delete_description, StartDescription.TYPE: self.start_description,
            StopDescription.TYPE: self.stop_description,
        }

    def answer(self, message: Message) -> Message:
        """The response to a client's ``<Request>`` (its ``Id`` is the caller's to set)."""
        try:
            request = parse_request(message)
            handler = self.table.get(request.TYPE)
            if handler is None:  # a command meant for agents, not for clients
                raise DomainError("unknown request", type=request.TYPE)
            return handler(request)
        except DomainError as exc:
            return error_reply(exc)

    # -- processes ------------------------------------------------------------------------------
    def start_process(self, request: StartProcess) -> Message:
        if request.process_type == TE or request.standby:
            request = request.following(self.primary_of(request.database))
        return self.command(request.peer, request)

    def stop_process(self, request: StopProcess) -> Message:
        with self.state.lock:
            record = self.state.processes.get(request.process)
        if record is None:
            raise NoSuchProcessError("no such process", process=request.process)
        return self.command(record.peer, request)

    def quiesce_database(self, request: QuiesceDatabase | UnquiesceDatabase) -> Message:
        database, quiesced = request.database, request.quiesced
        with self.state.lock:
            managers = [r for r in self.state.processes.values()
                        if r.database == database and r.type == SM and not r.standby]
        if not managers:
            raise DomainError("no running storage manager for this database", database=database)
        for record in managers:
            response = self.command(record.peer, QuiesceProcess(record.id, quiesced))
            if response.get("Status") != "ok":
                raise DomainError(response.get("Message", "quiesce failed"), database=database, process=record.id)
        return ok_reply(Database=database, Quiesced=quiesced)

    def primary_of(self, database: str, timeout: float = PRIMARY_WAIT_SECONDS) -> str:
        """The endpoint of the database's storage manager, waiting for one that is still starting.

        The seed starts a TE right after its SM without waiting: the TE's start waits here.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.state.lock:
                managers = [r for r in self.state.processes.values()
                            if r.database == database and r.type == SM and not r.standby]
            for record in managers:
                if record.status in (RUNNING, QUIESCED):
                    return record.endpoint
            if not managers or time.monotonic() > deadline:
                raise ProcessStartError("no running storage manager for this database", database=database)
            time.sleep(0.02)

    def locate(self, database: str) -> Message:
        """A running TE of ``database`` for a client, taking turns among them."""
        with self.state.lock:
            engines = sorted((r for r in self.state.processes.values()
                              if r.database == database and r.type == TE and r.status == RUNNING),
                             key=lambda r: r.id)
            if not engines:
                return error_reply(NoSuchDatabaseError(f"no running transaction engine for {database}",
                                                       database=database), tag="Error", Code="not-found")
            self._turn += 1
            return Message.make("Located", Database=database, Endpoint=engines[self._turn % len(engines)].endpoint)

    # -- descriptions ---------------------------------------------------------------------------
    def create_description(self, request: CreateDescription) -> Message:
        record = self.state.descriptions.create(request.description)
        self.state.description_written(record)
        return ok_reply(record.to_message())

    def update_description(self, request: UpdateDescription) -> Message:
        record = self.state.descriptions.get(request.name)
        template = find_template(request.template or record.template)
        variables = record.variables if request.variables is None else request.variables
        template.resolve(variables)
        record = self.state.descriptions.change(request.name, template=template.name, variables=variables)
        self.state.description_written(record)
        return ok_reply(record.to_message())

    def delete_description(self, request: DeleteDescription) -> Message:
        name = request.name
        if self.state.descriptions.get(name).started:
            raise DescriptionError(f"description {name!r} is started: stop it before deleting it", description=name)
        record = self.state.descriptions.change(name, deleted=True, status=STOPPED)
        self.state.description_written(record)
        return ok_reply()

    def start_description(self, request: StartDescription) -> Message:
        name = request.name
        record = self.state.descriptions.get(name)
        template = find_template(record.template)
        variables = template.resolve(record.variables)
        with self.state.lock:
            available = len(self.state.peers)
        needed = template.peers_needed(variables)
        host = variables.get("HOST")
        if host and host not in self.state.peers:
            raise DescriptionError(f"HOST {host!r} is no peer of the domain", description=name, host=host)
        if available < needed:
            raise DescriptionError(f"template {template.name!r} needs {needed} peers; the domain has {available}",
                                   description=name, needed=needed, available=available)
        record = self.state.descriptions.change(name, started=True, status="STARTING")
        self.state.description_written(record)
        return ok_reply(record.to_message())

    def stop_description(self, request: StopDescription) -> Message:
        """Mark the description stopped (the reconciler lets go), then stop its processes: TEs, then SMs."""
        name = request.name
        record = self.state.descriptions.change(name, started=False, status=STOPPED)
        self.state.description_written(record)
        # A second sweep catches a process a reconciler pass started just before it heard of the stop.
        for _ in range(2):
            for process_type in (TE, SM):
                with self.state.lock:
                    targets = [r for r in self.state.processes.values()
                               if r.database == name and r.type == process_type]
                for target in targets:
                    try:
                        self.command(target.peer, StopProcess(target.id))
                    except DomainError as exc:  # its peer left meanwhile: the process is gone with it
                        log.warning("stop_description %s: %s", name, exc)
                self.wait_gone({t.id for t in targets}, STOP_WAIT_SECONDS)
        return ok_reply(record.to_message())

    def wait_gone(self, process_ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.state.lock:
                if not process_ids & set(self.state.processes):
                    return True
            time.sleep(0.05)
        return False

    # -- routing --------------------------------------------------------------------------------
    def command(self, peer_id: str, request: Request) -> Message:
        """Run ``request`` on a peer; its response (an error response too, not raised)."""
        return self.send_to_peer(peer_id, request.to_message())

    def send_to_peer(self, peer_id: str, command: Message, forwarded: bool = False) -> Message:
        """Run a command on a peer: ourselves, an agent attached to us, or through the broker it is attached to."""
        state = self.state
        if peer_id == state.me.id:
            return state.agent.run_command(command)
        with state.lock:
            owner = state.owner.get(peer_id)
            agent_link = state.links.get(peer_id) if owner == state.me.id else None
            broker_link = state.brokers.get(owner) if owner is not None and owner != state.me.id else None
        if agent_link is not None:
            return agent_link.command(command)
        if broker_link is not None and not forwarded:
            return broker_link.command(Message(command.tag, {**command.attrs, "Target": peer_id}, command.children))
        raise DomainError("no such peer", peer=peer_id)
