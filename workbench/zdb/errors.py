"""Errors of workbench.zdb, declared once: what a server raises is what its clients catch.

::

    ZdbError                       (workbench.errors) root of this package's errors
    +-- ZdbTimeout                 no answer in time (also a TimeoutError); a write may have been applied
    +-- ZdbRemoteError             reported by a server; the fallback for a kind this client does not know
        +-- ZdbAuthenticationError the handshake was refused: wrong login or CURVE key, or none given
        +-- BadRequest             a malformed message
        +-- LockError              lock misuse: unlocking a lock you do not hold, or waiting past the timeout
        +-- QuiescedError          a write reached a quiesced storage manager
        +-- UndoError              nothing to undo or redo
        +-- ArchiveError           the archive directory cannot be used
        |   +-- JournalError       a write could not be journaled: refused, never applied
        +-- ZdbKeyError            a missing dict key (also a KeyError)
        +-- ZdbIndexError          a list index out of range (also an IndexError)
        +-- ZdbTypeError           an operation on the wrong type (also a TypeError)
        |   +-- UnstorableValueError  a value JSON cannot keep (fields: path, type), refused before sending
        +-- ZdbValueError          a bad value (also a ValueError)
        +-- ZdbAttributeError      no such operation (also an AttributeError)
        +-- ZdbFileNotFoundError   no blob with that hash (also a FileNotFoundError)

Replies carry errors in the envelope of ``workbench.errors``: ``{"kind", "message", "fields"}``,
``kind`` the declared class's name, or the Python exception's name for the builtin-backed ones
(``"KeyError"``), as a Python programmer reads them.
"""

from __future__ import annotations

from workbench.errors import ErrorRegistry, ZdbError


class ZdbTimeout(ZdbError, TimeoutError):
    """The server did not answer in time (a write may or may not have been applied)."""


class ZdbRemoteError(ZdbError):
    """An error reported by a zdb server (the class a client raises for a kind it does not know)."""


ZDB_ERRORS = ErrorRegistry("zdb", fallback=ZdbRemoteError)


@ZDB_ERRORS.declare
class ZdbAuthenticationError(ZdbRemoteError):
    """The server refused the connection's handshake: a wrong login or CURVE key, or none given."""


@ZDB_ERRORS.declare
class BadRequest(ZdbRemoteError):
    """The message is malformed: not JSON, wrong shape, unknown kind, too large or too deep."""


@ZDB_ERRORS.declare
class LockError(ZdbRemoteError):
    """Lock misuse: unlocking a lock you do not hold, or waiting past the timeout."""


@ZDB_ERRORS.declare
class QuiescedError(ZdbRemoteError):
    """A change reached a quiesced storage manager (reads go on; writes wait for unquiesce)."""


@ZDB_ERRORS.declare
class UndoError(ZdbRemoteError):
    """There is nothing to undo or redo."""


@ZDB_ERRORS.declare
class ArchiveError(ZdbRemoteError):
    """The archive directory cannot be used (locked by another server, unreadable snapshot...)."""


@ZDB_ERRORS.declare
class JournalError(ArchiveError):
    """A write could not be journaled (fields: errno, error, reason): it is refused, never applied."""


class ZdbKeyError(ZdbRemoteError, KeyError):
    """A missing dict key: ``except KeyError`` catches it."""


class ZdbIndexError(ZdbRemoteError, IndexError):
    """A list index out of range: ``except IndexError`` catches it."""


class ZdbTypeError(ZdbRemoteError, TypeError):
    """An operation on the wrong type: ``except TypeError`` catches it."""


class ZdbValueError(ZdbRemoteError, ValueError):
    """A bad value: ``except ValueError`` catches it."""


class ZdbAttributeError(ZdbRemoteError, AttributeError):
    """No such operation on the node: ``except AttributeError`` catches it."""


class ZdbFileNotFoundError(ZdbRemoteError, FileNotFoundError):
    """No blob with that hash: ``except FileNotFoundError`` catches it."""


@ZDB_ERRORS.declare
class UnstorableValueError(ZdbTypeError, ValueError):
    """A value JSON cannot keep as it is, refused by the client before it is sent (fields: path, type).

    An ``int`` dict key (JSON would make ``{1: 2}`` into ``{"1": 2}``), a tuple or set (JSON has
    lists only: give a list), bytes (store them as a blob, a ``File``), NaN or infinity, any other
    object. ``path`` is where the value was met (the op's path, then keys and indexes into the
    value), ``type`` its type's name. ``except TypeError`` and ``except ValueError`` both catch it.
    The server refuses the same values (as ``TypeError`` / ``ValueError``, with the same fields)
    from clients that do not check. A ``range`` is sent as its list.
    """


# The wire kind of each builtin-backed class is the Python exception's own name.
for _builtin, _declared in ((KeyError, ZdbKeyError), (IndexError, ZdbIndexError), (TypeError, ZdbTypeError),
                            (ValueError, ZdbValueError), (AttributeError, ZdbAttributeError),
                            (FileNotFoundError, ZdbFileNotFoundError)):
    ZDB_ERRORS.builtin(_builtin, _declared)


__all__ = ["ArchiveError", "BadRequest", "JournalError", "LockError", "QuiescedError",
           "UndoError", "UnstorableValueError", "ZDB_ERRORS", "ZdbAttributeError", "ZdbAuthenticationError", "ZdbFileNotFoundError",
           "ZdbIndexError", "ZdbKeyError", "ZdbRemoteError", "ZdbTimeout", "ZdbTypeError", "ZdbValueError"]
