"""What a domain knows: peers and processes as plain records, and their XML forms (no I/O).

Brokers hold these records as the domain's state and send them to clients; the client wraps
them in its entity objects (``Peer``, ``Process``, ``Database``). A database is not a record of
its own: it exists while it has processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from workbench.domain.protocol import Message

SM, TE = "SM", "TE"
#: process lifecycle; EXITED and FAILED are final
STARTING, RUNNING, QUIESCED, EXITED, FAILED = "STARTING", "RUNNING", "QUIESCED", "EXITED", "FAILED"
FINAL_STATES = frozenset({EXITED, FAILED})


@dataclass
class PeerRecord:
    """A host's agent (or broker): ``id`` is its management address, ``host:port``."""

    id: str
    hostname: str
    port: int
    role: str = "agent"  # or "broker"
    tags: dict[str, str] = field(default_factory=dict)

    def to_message(self) -> Message:
        return Message.make("Peer", *(Message.make("Tag", Name=k, Value=v) for k, v in sorted(self.tags.items())),
                            Id=self.id, Hostname=self.hostname, Port=self.port, Role=self.role)

    @classmethod
    def from_message(cls, message: Message) -> "PeerRecord":
        return cls(id=message.require("Id"), hostname=message.require("Hostname"), port=int(message.require("Port")),
                   role=message.get("Role", "agent") or "agent",
                   tags={t.require("Name"): t.require("Value") for t in message.find("Tag")})


@dataclass
class ProcessRecord:
    """A database process run by a peer: ``id`` is ``peer/pid`` (unique in the domain)."""

    id: str
    peer: str
    database: str
    type: str  # SM or TE
    hostname: str
    port: int
    pid: int
    status: str = STARTING
    archive: str = ""
    exit_code: int | None = None
    reason: str = ""
    standby: bool = False  # a standby SM: a current copy of the data following the primary SM
    primary: str = ""  # the endpoint of the SM a TE (or standby) follows

    @property
    def endpoint(self) -> str:
        """The zdb endpoint clients and replicas connect to."""
        return f"tcp://{self.hostname if self.hostname != 'localhost' else '127.0.0.1'}:{self.port}"

    def to_message(self) -> Message:
        # Unset fields stay out; "is" for False, since an exit code of 0 equals False and must travel.
        return Message.make("Process", **{_attr_name(f.name): value for f in fields(self)
                                          if (value := getattr(self, f.name)) is not None and value != ""
                                          and value is not False})

    @classmethod
    def from_message(cls, message: Message) -> "ProcessRecord":
        attrs = message.attrs
        try:
            return cls(id=attrs["Id"], peer=attrs["Peer"], database=attrs["Database"], type=attrs["Type"],
                       hostname=attrs["Hostname"], port=int(attrs["Port"]), pid=int(attrs["Pid"]),
                       status=attrs.get("Status", STARTING), archive=attrs.get("Archive", ""),
                       exit_code=int(attrs["ExitCode"]) if "ExitCode" in attrs else None,
                       reason=attrs.get("Reason", ""), standby=attrs.get("Standby") == "true",
                       primary=attrs.get("Primary", ""))
        except (KeyError, ValueError) as exc:
            from workbench.domain.protocol import ProtocolError

            raise ProtocolError(f"bad <Process>: {exc}") from None

    def copy(self) -> "ProcessRecord":
        return ProcessRecord(**asdict(self))


def _attr_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


#: description lifecycle, as the acting broker's reconciler sees it
STOPPED, DEGRADED = "STOPPED", "DEGRADED"


@dataclass
class DescriptionRecord:
    """A declared database: the template it follows and the state the brokers keep it in.

    ``name`` is also the database's name. ``version`` and ``origin`` (the broker that wrote it
    last) order replicated copies: the higher ``(version, origin)`` wins. A deleted description
    stays as a tombstone (``deleted``) so that brokers agree it is gone. ``placements`` pins a
    slot to a peer (a storage manager to the peer that owns its archive).
    """

    name: str
    template: str
    variables: dict[str, str] = field(default_factory=dict)
    dba_user: str = "dba"
    dba_password: str = "dba"
    archive_dir: str = ""
    started: bool = False
    status: str = STOPPED
    version: int = 0
    origin: str = ""
    deleted: bool = False
    placements: dict[str, str] = field(default_factory=dict)

    def newer_than(self, other: "DescriptionRecord | None") -> bool:
        return other is None or (self.version, self.origin) > (other.version, other.origin)

    def to_message(self, secrets: bool = False) -> Message:
        """The XML form; the dba password only between brokers (``secrets``), never to clients."""
        children = [Message.make("Variable", Name=k, Value=v) for k, v in sorted(self.variables.items())]
        children += [Message.make("Placement", Slot=k, Peer=v) for k, v in sorted(self.placements.items())]
        return Message.make("Description", *children, Name=self.name, Template=self.template,
                            DbaUser=self.dba_user, DbaPassword=self.dba_password if secrets else None,
                            ArchiveDir=self.archive_dir or None, Started=self.started, Status=self.status,
                            Version=self.version, Origin=self.origin, Deleted=self.deleted)

    @classmethod
    def from_message(cls, message: Message) -> "DescriptionRecord":
        attrs = message.attrs
        try:
            return cls(name=attrs["Name"], template=attrs["Template"],
                       variables={v.require("Name"): v.require("Value") for v in message.find("Variable")},
                       dba_user=attrs.get("DbaUser", "dba"), dba_password=attrs.get("DbaPassword", ""),
                       archive_dir=attrs.get("ArchiveDir", ""), started=attrs.get("Started") == "true",
                       status=attrs.get("Status", STOPPED), version=int(attrs.get("Version", "0")),
                       origin=attrs.get("Origin", ""), deleted=attrs.get("Deleted") == "true",
                       placements={p.require("Slot"): p.require("Peer") for p in message.find("Placement")})
        except (KeyError, ValueError) as exc:
            from workbench.domain.protocol import ProtocolError

            raise ProtocolError(f"bad <Description>: {exc}") from None

    def copy(self) -> "DescriptionRecord":
        return DescriptionRecord(**{**asdict(self), "variables": dict(self.variables),
                                    "placements": dict(self.placements)})
