"""Domain requests: each a small type that writes its ``<Request>`` and reads its ``<Response>`` (no I/O).

A client builds a request and sends ``request.to_message(request_id)``; the broker reads it back
with ``parse_request`` and dispatches on its ``TYPE``; the client reads the answer with
``request.parse_reply(response)``, which returns what the request yields (a ``ProcessRecord``, a
``DescriptionRecord``, or None) or raises the error the broker reported. The commands a broker
sends an agent (``StartProcess``, ``StopProcess``, ``QuiesceProcess``) are requests of the same kind.

::

    <Request Id="7" Type="StopProcess" Process="localhost:48004/4242" Kill="false"/>
    <Response Id="7" Status="ok"/>
    <Response Id="8" Status="error" Message="no such process" Error="NoSuchProcessError">
      <Field Name="process" Value="&quot;localhost:48004/99&quot;"/>
    </Response>

Errors travel in the envelope of ``workbench.errors``: ``Error`` is the declared kind (see
``workbench.domain.errors``), ``Message`` its message, and each structured field a ``<Field>``
whose ``Value`` is JSON (so numbers and lists come back as they went). ``error_reply`` is the one
place that writes it and ``reply_error`` the one that reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from workbench.domain.errors import DOMAIN_ERRORS, ProtocolError
from workbench.domain.model import DescriptionRecord, ProcessRecord
from workbench.domain.protocol import Message
from workbench.errors import DomainError

#: ``StartProcess.initialize``: create the archive when it is empty, reuse it otherwise
AUTO = "auto"

R = TypeVar("R", bound="Request")
REQUEST_TYPES: dict[str, type["Request"]] = {}  # by TYPE, filled by @request_type


def request_type(cls: type[R]) -> type[R]:
    """Register a request class under its ``TYPE`` (a decorator), so ``parse_request`` knows it."""
    if REQUEST_TYPES.setdefault(cls.TYPE, cls) is not cls:
        raise TypeError(f"a request of type {cls.TYPE} is declared already")
    return cls


class Request:
    """Base of the requests: ``TYPE`` is the ``Type`` attribute that names it on the wire."""

    TYPE: ClassVar[str]

    def attributes(self) -> dict[str, object]:
        """Its XML attributes besides ``Id`` and ``Type``, in wire order (None values are left out)."""
        return {}

    def children(self) -> list[Message]:
        return []

    def to_message(self, request_id: str | None = None) -> Message:
        return Message.make("Request", *self.children(), Id=request_id, Type=self.TYPE, **self.attributes())

    @classmethod
    def from_message(cls: type[R], message: Message) -> R:
        raise NotImplementedError

    def parse_reply(self, response: Message) -> Any:
        """What the request yields; the declared error class when the response reports one."""
        error = reply_error(response)
        if error is not None:
            raise error
        return self.result(response)

    def result(self, response: Message) -> Any:
        return None


def parse_request(message: Message) -> Request:
    """The typed request a ``<Request>`` (or an agent's ``<Command>``) stands for."""
    cls = REQUEST_TYPES.get(message.get("Type", ""))
    if cls is None:
        raise DomainError("unknown request", type=message.get("Type"))
    return cls.from_message(message)


def _flag(value: str | None) -> bool:
    return value == "true"


def _only(message: Message, tag: str) -> Message:
    found = message.find(tag)
    if not found:
        raise ProtocolError(f"<{message.tag}> lacks its <{tag}>", tag=message.tag, child=tag)
    return found[0]


class _ProcessResult:
    """A request answered with the process it concerns."""

    def result(self, response: Message) -> ProcessRecord:
        return ProcessRecord.from_message(_only(response, "Process"))


class _DescriptionResult:
    """A request answered with the description it concerns."""

    def result(self, response: Message) -> DescriptionRecord:
        return DescriptionRecord.from_message(_only(response, "Description"))


# -- processes ----------------------------------------------------------------------------------
@request_type
@dataclass(frozen=True)
class StartProcess(_ProcessResult, Request):
    """Start an SM or TE of ``database`` on ``peer``; the broker adds ``primary`` for a replica."""

    TYPE: ClassVar[str] = "StartProcess"
    peer: str
    database: str
    process_type: str
    archive: str | None = None
    #: True, False, AUTO, or None: left out (which the agent reads as False)
    initialize: bool | str | None = None
    standby: bool = False
    #: the endpoint of the storage manager a TE or standby follows (set by the broker)
    primary: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def attributes(self) -> dict[str, object]:
        return {"Peer": self.peer, "Database": self.database, "ProcessType": self.process_type,
                "Archive": self.archive, "Initialize": self.initialize, "Standby": self.standby or None,
                "Primary": self.primary}

    def children(self) -> list[Message]:
        return [Message.make("Option", Name=name, Value=value) for name, value in self.options]

    @classmethod
    def from_message(cls, message: Message) -> "StartProcess":
        initialize = message.get("Initialize")
        return cls(peer=message.require("Peer"), database=message.require("Database"),
                   process_type=message.require("ProcessType"), archive=message.get("Archive"),
                   initialize=initialize if initialize in (None, AUTO) else _flag(initialize),
                   standby=_flag(message.get("Standby")), primary=message.get("Primary"),
                   options=tuple((o.require("Name"), o.require("Value")) for o in message.find("Option")))

    def following(self, primary: str) -> "StartProcess":
        """This request with the endpoint of the storage manager to follow."""
        return replace(self, primary=primary)


@request_type
@dataclass(frozen=True)
class StopProcess(Request):
    """Stop a process: SIGTERM, or SIGKILL with ``kill`` (None leaves the attribute out: a plain stop)."""

    TYPE: ClassVar[str] = "StopProcess"
    process: str
    kill: bool | None = None

    def attributes(self) -> dict[str, object]:
        return {"Process": self.process, "Kill": self.kill}

    @classmethod
    def from_message(cls, message: Message) -> "StopProcess":
        kill = message.get("Kill")
        return cls(process=message.require("Process"), kill=None if kill is None else _flag(kill))


@request_type
@dataclass(frozen=True)
class QuiesceProcess(_ProcessResult, Request):
    """The command that quiesces (or unquiesces) one storage manager, from a broker to its agent."""

    TYPE: ClassVar[str] = "Quiesce"
    process: str
    quiesced: bool

    def attributes(self) -> dict[str, object]:
        return {"Process": self.process, "Quiesced": self.quiesced}

    @classmethod
    def from_message(cls, message: Message) -> "QuiesceProcess":
        return cls(process=message.require("Process"), quiesced=_flag(message.get("Quiesced")))


@dataclass(frozen=True)
class _DatabaseRequest(Request):
    database: str

    def attributes(self) -> dict[str, object]:
        return {"Database": self.database}

    @classmethod
    def from_message(cls, message: Message) -> "_DatabaseRequest":
        return cls(database=message.require("Database"))


@request_type
@dataclass(frozen=True)
class QuiesceDatabase(_DatabaseRequest):
    """Make a database's storage manager refuse writes."""

    TYPE: ClassVar[str] = "QuiesceDatabase"
    quiesced: ClassVar[bool] = True


@request_type
@dataclass(frozen=True)
class UnquiesceDatabase(_DatabaseRequest):
    """Let a database's storage manager take writes again."""

    TYPE: ClassVar[str] = "UnquiesceDatabase"
    quiesced: ClassVar[bool] = False


# -- descriptions -------------------------------------------------------------------------------
@request_type
@dataclass(frozen=True)
class CreateDescription(_DescriptionResult, Request):
    """Declare a description (its dba password travels: the brokers start its engines with it)."""

    TYPE: ClassVar[str] = "CreateDescription"
    description: DescriptionRecord

    def children(self) -> list[Message]:
        return [self.description.to_message(secrets=True)]

    @classmethod
    def from_message(cls, message: Message) -> "CreateDescription":
        return cls(description=DescriptionRecord.from_message(_only(message, "Description")))


@request_type
@dataclass(frozen=True)
class UpdateDescription(_DescriptionResult, Request):
    """Change a description's template and/or replace its variables (None: keep them)."""

    TYPE: ClassVar[str] = "UpdateDescription"
    name: str
    template: str | None = None
    variables: dict[str, str] | None = None

    def attributes(self) -> dict[str, object]:
        return {"Name": self.name, "Template": self.template,
                "Variables": "replace" if self.variables is not None else None}

    def children(self) -> list[Message]:
        return [Message.make("Variable", Name=k, Value=v) for k, v in (self.variables or {}).items()]

    @classmethod
    def from_message(cls, message: Message) -> "UpdateDescription":
        variables = {v.require("Name"): v.require("Value") for v in message.find("Variable")} \
            if message.get("Variables") == "replace" else None
        return cls(name=message.require("Name"), template=message.get("Template"), variables=variables)


@dataclass(frozen=True)
class _NamedDescription(Request):
    name: str

    def attributes(self) -> dict[str, object]:
        return {"Name": self.name}

    @classmethod
    def from_message(cls, message: Message) -> "_NamedDescription":
        return cls(name=message.require("Name"))


@request_type
@dataclass(frozen=True)
class DeleteDescription(_NamedDescription):
    """Forget a stopped description."""

    TYPE: ClassVar[str] = "DeleteDescription"


@request_type
@dataclass(frozen=True)
class StartDescription(_DescriptionResult, _NamedDescription):
    """Start a description: the reconciler starts its processes and keeps them running."""

    TYPE: ClassVar[str] = "StartDescription"


@request_type
@dataclass(frozen=True)
class StopDescription(_DescriptionResult, _NamedDescription):
    """Stop a description: the reconciler lets go and its processes stop."""

    TYPE: ClassVar[str] = "StopDescription"


# -- responses ----------------------------------------------------------------------------------
def ok_reply(*children: Message, **attrs: object) -> Message:
    """A successful ``<Response>`` (the answering side sets its ``Id``)."""
    return Message.make("Response", *children, Status="ok", **attrs)


def error_reply(exc: BaseException, tag: str = "Response", **attrs: object) -> Message:
    """The ``<Response>`` (or a refusal's ``<Error>``) reporting ``exc`` in the error envelope.

    ``attrs`` are extra attributes; a refused login keeps its short ``Code=`` there for peers that
    read only that.
    """
    envelope = DOMAIN_ERRORS.envelope(exc)
    fields = [Message.make("Field", Name=name, Value=json.dumps(value)) for name, value in envelope["fields"].items()]
    status = {"Status": "error"} if tag == "Response" else {}
    return Message.make(tag, *fields, **status, Message=envelope["message"], Error=envelope["kind"], **attrs)


def reply_error(response: Message, **context: Any) -> DomainError | None:
    """The declared error a ``<Response>`` or ``<Error>`` reports (DomainError for an unknown kind);
    None if it is ok. ``context`` adds the client's own fields (which broker, which user)."""
    if response.get("Status") == "ok":
        return None
    fields: dict[str, Any] = {}
    for field in response.find("Field"):
        name, value = field.require("Name"), field.get("Value", "null")
        try:
            fields[name] = json.loads(value)
        except ValueError:  # not JSON (a hand-written reply): the text itself
            fields[name] = value
    error = DOMAIN_ERRORS.error({"kind": response.get("Error", ""), "fields": {**fields, **context},
                                 "message": response.get("Message") or "request failed"})
    assert isinstance(error, DomainError)  # the registry's classes and fallback all derive from it
    return error


__all__ = ["AUTO", "REQUEST_TYPES", "CreateDescription", "DeleteDescription", "QuiesceDatabase", "QuiesceProcess",
           "Request", "StartDescription", "StartProcess", "StopDescription", "StopProcess", "UnquiesceDatabase",
           "UpdateDescription", "error_reply", "ok_reply", "parse_request", "reply_error", "request_type"]
