"""The application port's wire format: length-prefixed JSON messages (no I/O here).

The port is a Unix socket (``DEFAULT_SOCKET`` unless the server is told another path), so the
server knows every caller's uid from the kernel; see ``access`` for what that uid may do.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
object. Requests name an ``op``; replies carry ``ok`` and either the result fields or an
``error`` (``message``, ``kind`` and structured ``fields``)::

    >>> encode_frame({"op": "status"})[:4]
    b'\\x00\\x00\\x00\\x0f'
    >>> decoder = FrameDecoder()
    >>> decoder.feed(encode_frame({"op": "status"}))
    [{'op': 'status'}]

Numbers are plain JSON numbers: ``NaN``, ``Infinity`` and overflowing literals are refused.

Requests (see ``server.InventoryServer.handle`` for their handlers and ``client.InventoryClient`` for
the calls): ``status``, ``servers``, ``exec``, ``authorize``, ``revoke``, ``authorizations``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from workbench.inventory.errors import INVENTORY_ERRORS, ProtocolError
from workbench.framing import FrameSplitter, frame

#: where a server listens, and a client connects, unless told otherwise
DEFAULT_SOCKET = "/tmp/workbench-inventory.sock"
DEFAULT_ADDRESS = DEFAULT_SOCKET
#: largest frame accepted: a script, its output or 10^5 changes fit well within it
MAX_FRAME_BYTES = 256 * 1024 * 1024

#: every request op and the fields it must carry
REQUESTS: dict[str, tuple[str, ...]] = {
    "status": (),
    "servers": (),
    # ``user`` is optional: the caller's own login name (an admin may name another)
    "exec": ("script", "name", "args", "write", "title"),
    "authorize": ("script", "title"),
    "revoke": ("title",),
    "authorizations": (),
}


def encode_frame(message: dict[str, Any]) -> bytes:
    """One message as a frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError("message too large", reason="size", size=len(body), limit=MAX_FRAME_BYTES)
    return frame(body)


class FrameDecoder(FrameSplitter):
    """Turns a byte stream into messages; raises ``ProtocolError`` on a bad length or bad JSON."""

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        super().__init__(limit, _frame_too_large)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return [decode_body(body) for body in self.bodies(data)]

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return self.pending_bytes


def _frame_too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError("frame too large", reason="size", size=size, limit=limit)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:32]} does not fit a float")
    return value


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}", reason="json") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object", reason="type")
    return message


def check_request(message: dict[str, Any]) -> str:
    """The op of a well-formed request; ``ProtocolError`` naming what is wrong otherwise."""
    op = message.get("op")
    if op not in REQUESTS:
        raise ProtocolError(f"unknown op {op!r} (one of {sorted(REQUESTS)})", reason="op", op=op)
    missing = [name for name in REQUESTS[op] if name not in message]
    if missing:
        raise ProtocolError(f"{op} needs {', '.join(missing)}", reason="fields", op=op, missing=missing)
    return op


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The reply carrying an exception: its envelope (declared kind, message, JSON-able fields)."""
    return {"ok": False, "error": INVENTORY_ERRORS.envelope(exc)}


def parse_address(address: str) -> str:
    """The socket path a client connects to: ``address`` itself, checked to be a path.

    The application port is a Unix socket; a ``HOST:PORT`` is refused with a clear error (the
    server prints its socket path when it starts).
    """
    from workbench.errors import ConfigurationError

    if not isinstance(address, str) or not address or "\0" in address:
        raise ConfigurationError("the application port is a socket path", address=address)
    if not address.startswith(("/", ".")) and ":" in address:
        raise ConfigurationError("the application port is a Unix socket: give its path (the server prints it), "
                                 "not HOST:PORT", address=address)
    return address


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_SOCKET", "FrameDecoder", "MAX_FRAME_BYTES", "ProtocolError", "REQUESTS",
           "check_request", "decode_body", "encode_frame", "error_reply", "parse_address"]
