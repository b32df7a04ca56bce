"""Payload types a commits server validates with: JSON, bytes, YAML and Java properties, by name.

Rainer's servlet checks every POSTed payload with the ``KeyValueDeserialization`` it was built
with (its stock server: a JSON object); ``workbench commits serve --payload TYPE`` picks ours::

    >>> payload_serialization("yaml").loads(b"new value")
    'new value'
    >>> payload_serialization("properties").loads(b"a = 1\\n# why\\nb: two")
    {'a': '1', 'b': 'two'}
    >>> payload_serialization("suffix")("conf.properties").name
    'properties'

``suffix`` chooses per key: ``.properties`` keys are properties, the others as
:func:`~workbench.commits.model.serialization_by_suffix` says (JSON unless ``.yaml``, ``.txt``...).
This module does no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.commits.model import JSON, RAW, YAML, Serialization, SerializationChooser, serialization_by_suffix
from workbench.errors import ConfigurationError

__all__ = ["PropertiesSerialization", "PROPERTIES", "PAYLOAD_TYPES", "PAYLOAD_CHOICES", "DEFAULT_PAYLOAD",
           "payload_serialization", "serialization_by_key_type"]

#: the payload type of ``serve`` when none is given: JSON, as Rainer's stock server
DEFAULT_PAYLOAD = "json"

# the escapes of java.util.Properties: \t \n \r \f, \uXXXX, and a backslash before anything else
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_WHITESPACE = " \t\f"


class PropertiesSerialization:
    """Java ``.properties`` text as ``java.util.Properties.load`` reads it, in UTF-8: the value is a
    ``dict`` of str to str. ``#``/``!`` comments, ``=``, ``:`` or whitespace between key and value,
    backslash continuations and escapes; a malformed ``\\uXXXX`` or bytes that are not UTF-8 are
    invalid (``ValueError``)."""

    name = "properties"
    content_type = "text/plain; charset=utf-8"

    def loads(self, payload: bytes) -> Any:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"invalid properties: not UTF-8: {exc}") from None
        return dict(_entry(line) for line in _logical_lines(text))

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, dict):
            raise TypeError(f"properties payloads are dicts, not {type(value).__name__}")
        lines = [f"{_escape(str(key), True)}={_escape(str(item), False)}\n" for key, item in value.items()]
        return "".join(lines).encode("utf-8")


def _logical_lines(text: str) -> list[str]:
    """Natural lines joined where one ends in an odd number of backslashes; comments and blank
    lines dropped; leading whitespace (also of continuations) dropped."""
    logical: list[str] = []
    pending: str | None = None
    for natural in re.split(r"\r\n|\r|\n", text):
        stripped = natural.lstrip(_WHITESPACE)
        if pending is None and (not stripped or stripped[0] in "#!"):
            continue
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        continued = trailing % 2 == 1
        part = stripped[:-1] if continued else stripped
        pending = part if pending is None else pending + part
        if not continued:
            logical.append(pending)
            pending = None
    if pending is not None:
        logical.append(pending)
    return logical


def _entry(line: str) -> tuple[str, str]:
    """A logical line -> (key, value), both unescaped."""
    index, escaped = 0, False
    while index < len(line):
        ch = line[index]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "=:" or ch in _WHITESPACE:
            break
        index += 1
    key, rest = line[:index], line[index:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(key), _unescape(rest)


def _unescape(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        ch = text[index]
        index += 1
        if ch != "\\" or index == len(text):
            out.append(ch)
            continue
        ch = text[index]
        index += 1
        if ch == "u":
            digits = text[index:index + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise ValueError(f"invalid properties: malformed \\uxxxx encoding: \\u{digits}")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append(_ESCAPES.get(ch, ch))
    return "".join(out)


def _escape(text: str, is_key: bool) -> str:
    out = []
    for position, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r\f":
            out.append("\\" + {"\t": "t", "\n": "n", "\r": "r", "\f": "f"}[ch])
        elif ch in "=:#!" or (ch == " " and (is_key or position == 0)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


PROPERTIES = PropertiesSerialization()

#: ``--payload`` names and the serialization each stands for
PAYLOAD_TYPES: dict[str, Serialization] = {"json": JSON, "bytes": RAW, "yaml": YAML, "properties": PROPERTIES}


def serialization_by_key_type(key: str) -> Serialization:
    """Properties for ``.properties`` keys, else :func:`serialization_by_suffix`'s choice."""
    return PROPERTIES if key.lower().endswith(".properties") else serialization_by_suffix(key)


def payload_serialization(name: str) -> Serialization | SerializationChooser:
    """The serialization of a ``--payload`` name (``json``, ``bytes``, ``yaml``, ``properties``), or
    the per-key chooser for ``suffix``; anything else is a ``ConfigurationError``."""
    if name == "suffix":
        return serialization_by_key_type
    try:
        return PAYLOAD_TYPES[name]
    except KeyError:
        raise ConfigurationError(f"unknown payload type {name!r}: one of {', '.join(PAYLOAD_CHOICES)}",
                                 payload=name) from None


#: every name ``payload_serialization`` accepts
PAYLOAD_CHOICES = (*PAYLOAD_TYPES, "suffix")
