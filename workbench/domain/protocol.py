"""Domain messages: XML elements framed by a 4-byte length prefix (no I/O here).

A message is one XML element with string attributes and child elements::

    <Request Type="StartProcess" Peer="localhost:48004" Database="teas" ProcessType="TE">
      <Option Name="--dba-user" Value="dba"/>
    </Request>

On the wire each message is ``>I`` (its byte length) followed by the UTF-8 XML (the framing of
``workbench.framing``). Parsing goes
through defusedxml with DTDs, entities and external references forbidden, and both the frame
length and the nesting depth are bounded, so a peer cannot make us allocate or recurse without
limit. Attribute values are escaped by ElementTree when serializing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator
from xml.etree.ElementTree import Element, tostring

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from workbench.domain.errors import ProtocolError
from workbench.framing import FrameSplitter, frame

#: the management port of an agent or broker (NuoDB's)
DEFAULT_PORT = 48004
#: largest frame accepted (a full domain listing of thousands of processes fits easily)
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: deepest element nesting accepted
MAX_DEPTH = 16


@dataclass
class Message:
    """One XML element: ``tag``, string ``attrs`` and child ``Message``s."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list["Message"] = field(default_factory=list)

    @classmethod
    def make(cls, tag: str, *children: "Message", **attrs: object) -> "Message":
        """Build a message; attribute values become strings, None values are left out."""
        return cls(tag, {k: _attr(v) for k, v in attrs.items() if v is not None}, list(children))

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)

    def require(self, name: str) -> str:
        """An attribute that must be there; ProtocolError names it otherwise."""
        try:
            return self.attrs[name]
        except KeyError:
            raise ProtocolError(f"<{self.tag}> lacks the {name} attribute", tag=self.tag, attribute=name) from None

    def find(self, tag: str) -> list["Message"]:
        return [child for child in self.children if child.tag == tag]

    def to_element(self) -> Element:
        element = Element(self.tag, self.attrs)
        for child in self.children:
            element.append(child.to_element())
        return element

    def to_xml(self) -> bytes:
        return tostring(self.to_element(), encoding="utf-8", xml_declaration=False)

    @classmethod
    def from_element(cls, element: Element, depth: int = 0) -> "Message":
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
        return cls(element.tag, dict(element.attrib), [cls.from_element(c, depth + 1) for c in element])

    @classmethod
    def from_xml(cls, data: bytes) -> "Message":
        """Parse one message safely; ProtocolError for anything malformed or dangerous."""
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError("message too large", size=len(data), limit=MAX_FRAME_BYTES)
        try:
            element = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DefusedXmlException as exc:
            raise ProtocolError(f"forbidden XML construct: {type(exc).__name__}") from None
        except SafeET.ParseError as exc:
            raise ProtocolError(f"malformed XML: {exc}") from None
        return cls.from_element(element)


def _attr(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_frame(message: Message) -> bytes:
    """A message as it goes on the wire: length prefix + XML."""
    body = message.to_xml()
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError("message too large to send", size=len(body), limit=MAX_FRAME_BYTES)
    return frame(body)


class FrameDecoder(FrameSplitter):
    """Incremental decoder: feed bytes as they arrive, iterate over complete messages.

    ::

        decoder = FrameDecoder()
        for message in decoder.feed(sock.recv(65536)):
            handle(message)
    """

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        super().__init__(limit, _frame_too_large)

    def feed(self, data: bytes) -> Iterator[Message]:
        for body in self.bodies(data):
            yield Message.from_xml(body)


def _frame_too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError("frame too large", size=size, limit=limit)
