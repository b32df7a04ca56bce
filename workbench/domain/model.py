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

    @property
    def endpoint(self) -> str:
        """The zdb endpoint clients and replicas connect to."""
        return f"tcp://{self.hostname if self.hostname != 'localhost' else '127.0.0.1'}:{self.port}"

    def to_message(self) -> Message:
        return Message.make("Process", **{_attr_name(f.name): getattr(self, f.name) for f in fields(self)
                                          if getattr(self, f.name) not in (None, "")})

    @classmethod
    def from_message(cls, message: Message) -> "ProcessRecord":
        attrs = message.attrs
        try:
            return cls(id=attrs["Id"], peer=attrs["Peer"], database=attrs["Database"], type=attrs["Type"],
                       hostname=attrs["Hostname"], port=int(attrs["Port"]), pid=int(attrs["Pid"]),
                       status=attrs.get("Status", STARTING), archive=attrs.get("Archive", ""),
                       exit_code=int(attrs["ExitCode"]) if "ExitCode" in attrs else None,
                       reason=attrs.get("Reason", ""))
        except (KeyError, ValueError) as exc:
            from workbench.domain.protocol import ProtocolError

            raise ProtocolError(f"bad <Process>: {exc}") from None

    def copy(self) -> "ProcessRecord":
        return ProcessRecord(**asdict(self))


def _attr_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
