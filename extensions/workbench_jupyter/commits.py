"""The ``%commits`` / ``%%commits`` magics: versioned configuration from a notebook, with a live table.

::

    %commits connect http://127.0.0.1:8080/diary                  # by URL
    %commits connect http://127.0.0.1:8080/diary --zookeeper 127.0.0.1:2181 --zk-path /rainer/diary
    %commits                                                      # live table of keys
    %commits show limits                                          # the latest value
    %commits show limits 1                                        # an older one
    %commits log limits                                           # history (DataFrame) and diffs
    %commits old << show limits 1                                 # keep a result in `old`

    %%commits limits -m "raise the limit"
    {"max": 20}

Connected through ZooKeeper the table follows the keeper's mirror, so it changes as commits land
anywhere in the cluster. Connected by URL only, the HTTP API has no push channel: the table
changes on this notebook's own commits and when its Refresh button (or ``%commits refresh``) reads
the heads again; it never polls. Options: ``%config CommitsMagic.<name> = value``.
"""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Enum, Float, Int, Unicode

from workbench.commits import (
    JSON,
    RAW,
    TEXT,
    YAML,
    Commit,
    CommitClient,
    CommitNotFound,
    CommitServerUnreachable,
    CommitsHttpError,
    HeadsView,
    HttpCommitConflict,
    InvalidCommit,
    format_mtime,
    payload_text,
    serialization_by_suffix,
    unified_diff,
)
from workbench.errors import CommitsError, ConfigurationError
from workbench_jupyter.sessions import DashboardSession
from workbench_jupyter.subsystem_magic import CommandTable, SubsystemMagic, disconnect_arguments, redact, split_capture

COMMANDS = ("connect", "disconnect", "show", "log", "diff", "revert", "delete", "refresh", "status")
#: commands whose first argument is a key (tab completion offers keys there)
KEY_COMMANDS = ("show", "log", "diff", "revert", "delete")
USAGE = ("%commits connect [URL] [--zookeeper HOST:PORT --zk-path PATH] [--name NAME] | %commits | "
         "%commits show KEY [VERSION] | %commits log KEY | %commits diff KEY [OLD [NEW]] | "
         "%commits revert KEY VERSION [-m MESSAGE] | %commits delete KEY [-m MESSAGE] | %commits refresh | "
         "%commits disconnect [NAME] | %commits [-c NAME] ... | %commits VAR << COMMAND | %%commits KEY -m MESSAGE")


SERIALIZATIONS = {"json": JSON, "yaml": YAML, "text": TEXT, "raw": RAW, "suffix": serialization_by_suffix}


def count(number: int, noun: str) -> str:
    """``1 key``, ``3 keys``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


# -- one connection -------------------------------------------------------------------------------------
class CommitsSession(DashboardSession):
    """One ``%commits connect``: a ``CommitClient`` (with a URL), a mirror (with ZooKeeper), or both.

    It is the ``client`` of its ``Connection`` in the registry: ``add_listener`` /
    ``remove_listener`` / ``flush_events`` go to ``source``, the mirror when there is one, else a
    ``HeadsView`` of the client. ``connection_status()`` says how it is.
    """

    def __init__(self, name: str, url: str | None, zookeeper: str | None, zk_path: str | None, *,
                 author: str, serialization: Any, timeout: float, token: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.url = url
        self.zookeeper = zookeeper
        self.zk_path = zk_path
        self.client: CommitClient | None = None
        self.view: HeadsView | None = None
        self.zk: Any = None
        self.mirror: Any = None
        self.token = token  # kept only so that messages can hide it
        try:
            if url:
                self.client = CommitClient(url, author=author, serialization=serialization, timeout=timeout,
                                           token=token)
            if zookeeper:
                self._follow_zookeeper(serialization, timeout)
            else:
                assert self.client is not None
                self.view = self.client.heads_view()  # one request: also checks the server answers
        except BaseException:
            self.close()
            raise

    def _follow_zookeeper(self, serialization: Any, timeout: float) -> None:
        from kazoo.client import KazooClient

        from workbench.commits import CommitKeeper

        self.zk = KazooClient(hosts=self.zookeeper, timeout=max(timeout, 2.0))
        try:
            self.zk.start(timeout=timeout)
        except Exception as exc:  # kazoo raises its own timeout class, among others
            raise CommitServerUnreachable(f"cannot reach ZooKeeper at {self.zookeeper}: {exc}",
                                          url=str(self.zookeeper), reason=str(exc), status=None,
                                          body="") from None
        self.mirror = CommitKeeper(self.zk, str(self.zk_path), serialization).mirror(timeout)

    # -- what it shows ------------------------------------------------------------------------------
    @property
    def source(self) -> Any:
        """What the live table listens to: the mirror, else the heads view."""
        return self.mirror if self.mirror is not None else self.view

    @property
    def live(self) -> bool:
        """True when changes made anywhere reach the table (through ZooKeeper)."""
        return self.mirror is not None

    @property
    def target(self) -> str:
        parts = [redact(self.url)] if self.url else []
        if self.zookeeper:
            parts.append(f"zookeeper {self.zookeeper}{self.zk_path}")
        return " + ".join(parts)

    def keys(self) -> list[str]:
        """The keys known without asking the server (for completion)."""
        source = self.source
        return sorted(source) if source is not None else []

    def add_listener(self, listener: Any) -> None:
        self.source.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        source = self.source
        if source is not None:
            source.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        source = self.source
        return source.flush_events(timeout) if source is not None else True

    def refresh(self) -> int:
        """Read every head again (URL connections); the mirror needs no refresh."""
        if self.view is None:
            return 0
        return self.view.refresh()

    def writer(self) -> CommitClient:
        """The client for history and commits; a UsageError when connected through ZooKeeper only."""
        if self.client is None:
            raise UsageError(f"commits: {self.name!r} follows ZooKeeper only; history and commits need the "
                             "server's URL (%commits connect URL --zookeeper HOST:PORT --zk-path PATH)")
        return self.client

    def connection_status(self) -> str:
        if self._closed:
            return "closed"
        if self.zk is not None and not self.zk.connected:
            return f"ZooKeeper {str(self.zk.state).lower()}"
        return "live (ZooKeeper)" if self.live else "connected (refresh on demand)"

    # -- lifecycle ----------------------------------------------------------------------------------
    def _close(self) -> None:
        """View, mirror, ZooKeeper client and HTTP client (after the dashboards)."""
        for part in (self.view, self.mirror):
            if part is not None:
                part.close()
        if self.zk is not None:
            self.zk.stop()
            self.zk.close()
        if self.client is not None:
            self.client.close()


# -- results ------------------------------------------------------------------------------------------
_DIFF_COLOURS = {"+": "#1a7f37", "-": "#cf222e", "@": "#8250df"}


def diff_html(lines: list[str]) -> str:
    """A unified diff as coloured HTML (additions green, removals red, hunks purple)."""
    rendered = []
    for line in lines:
        text = html.escape(line.rstrip("\n"))
        if line.startswith(("---", "+++")):
            rendered.append(f"<b>{text}</b>")
        elif line[:1] in _DIFF_COLOURS:
            rendered.append(f"<span style='color:{_DIFF_COLOURS[line[:1]]}'>{text}</span>")
        else:
            rendered.append(text)
    body = "\n".join(rendered) or "(no change)"
    return f"<pre class='commits-diff'>{body}</pre>"


@dataclass
class CommitDiff:
    """What ``%commits diff`` shows: a unified diff, as text and as coloured HTML."""

    lines: list[str]

    def __str__(self) -> str:
        return "".join(self.lines)

    def __repr__(self) -> str:
        return str(self) or "(no change)"

    def _repr_html_(self) -> str:
        return diff_html(self.lines)


@dataclass
class CommitHistory:
    """What ``%commits log KEY`` shows: every version (``frame``, a DataFrame) and what each changed.

    ``commits`` is oldest first; ``diffs[v]`` is the unified diff from version ``v - 1`` to ``v``.
    The HTML shows the table and the diffs of the newest ``shown`` versions, newest first.
    """

    key: str
    commits: list[Commit]
    shown: int = 20
    diffs: dict[int, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        previous: Commit | None = None
        for commit in self.commits:
            self.diffs[commit.version] = unified_diff(previous, commit, key=self.key)
            previous = commit

    @property
    def frame(self) -> Any:
        import pandas

        rows = [{"version": c.version, "author": c.author, "comment": c.comment, "mtime": c.mtime,
                 "empty": c.empty, "bytes": 0 if c.payload is None else len(c.payload)} for c in self.commits]
        frame = pandas.DataFrame(rows, columns=["version", "author", "comment", "mtime", "empty", "bytes"])
        return frame.set_index("version")

    def __repr__(self) -> str:
        lines = [f"{self.key}: {len(self.commits)} versions"]
        for commit in reversed(self.commits[-self.shown:]):
            lines.append(f"Commit {commit.version}{' (empty)' if commit.empty else ''} by {commit.author} "
                         f"at {format_mtime(commit.mtime)}: {commit.comment}")
            lines.append("".join(self.diffs[commit.version]).rstrip("\n"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<div class='commits-log'><b>{html.escape(self.key)}</b>: {len(self.commits)} versions",
                 self.frame.to_html()]
        for commit in reversed(self.commits[-self.shown:]):
            title = (f"Commit {commit.version}{' (empty)' if commit.empty else ''} · "
                     f"{html.escape(commit.author)} · {html.escape(format_mtime(commit.mtime))}")
            comment = f"<br><i>{html.escape(commit.comment)}</i>" if commit.comment else ""
            parts.append(f"<p><b>{title}</b>{comment}</p>{diff_html(self.diffs[commit.version])}")
        return "".join(parts) + "</div>"


def _value_of(commit: Commit) -> Any:
    """A commit's value; its text when the payload does not read with the configured serialization."""
    try:
        return commit.value
    except InvalidCommit:
        return payload_text(commit.payload)


def stack_token(url: str | None) -> str | None:
    """The write token of the running stack (``WORKBENCH_STACK``) when ``url`` is its commits server."""
    from workbench.stack import environment_stack

    if not url:
        return None
    stack = environment_stack()
    served = ((stack or {}).get("endpoints", {}).get("commits") or {}).get("url")
    if not served or url.rstrip("/") != served.rstrip("/") and not url.startswith(served.rstrip("/") + "/"):
        return None
    return ((stack or {}).get("secrets", {}).get("commits") or {}).get("token")


# -- argument parsers of the commands --------------------------------------------------------------------
@magic_arguments(name="commits connect")
@argument("url", nargs="?", help="the server, e.g. http://127.0.0.1:8080/diary")
@argument("--zookeeper", metavar="HOST:PORT", help="follow the keeper's mirror in this ZooKeeper")
@argument("--zk-path", metavar="PATH", help="the keeper's znode path, e.g. /rainer/diary")
@argument("--name", default="commits", help="connection name in %%workbench (default: commits)")
@argument("--token", help="bearer token for servers that require one on writes (default: the running "
                           "workbench stack's, for its commits server)")
@argument("--author", help="author of this notebook's commits (default: CommitsMagic.author or your login)")
def _connect_arguments(line: str) -> None:
    """Connect to a commits server."""


@magic_arguments(name="commits show")
@argument("key")
@argument("version", nargs="?", type=int)
def _show_arguments(line: str) -> None:
    """Show a value."""


@magic_arguments(name="commits diff")
@argument("key")
@argument("old", nargs="?", type=int)
@argument("new", nargs="?", type=int)
def _diff_arguments(line: str) -> None:
    """Diff two versions."""


@magic_arguments(name="commits revert")
@argument("key")
@argument("version", type=int)
@argument("-m", "--message", help="commit message")
def _revert_arguments(line: str) -> None:
    """Commit an older version again."""


@magic_arguments(name="commits delete")
@argument("key")
@argument("-m", "--message", default="", help="commit message")
def _delete_arguments(line: str) -> None:
    """Commit a tombstone."""


@magic_arguments(name="commits log")
@argument("key")
def _log_arguments(line: str) -> None:
    """History of a key."""


@magic_arguments(name="%%commits")
@argument("key", help="the key to commit the cell's body to")
@argument("-m", "--message", required=True, help="commit message")
@argument("--version", type=int, help="the version to create (default: the latest + 1)")
@argument("--author", help="author (default: the connection's)")
@argument("-c", "--connection", help="connection to use (default: the last one connected)")
def _cell_arguments(line: str) -> None:
    """Commit the cell's body."""


# -- the magics --------------------------------------------------------------------------------------------
@magics_class
class CommitsMagic(SubsystemMagic):
    """commits magics; options are set with ``%config CommitsMagic.<name> = value``."""

    family = "commits"
    usage = USAGE
    connect_hint = "%commits connect URL first"

    timeout = Float(10.0, config=True, help="Seconds to wait for the server or ZooKeeper.")
    author = Unicode("", config=True, help="Author of commits made here (default: your login name).")
    serialization = Enum(list(SERIALIZATIONS), default_value="json", config=True,
                         help="How values are read and written: json, yaml, text, raw, or suffix "
                              "(by the key's suffix: .yaml, .txt, .bin, else JSON).")
    dashboard_max_rate = Float(10.0, config=True, help="Most live-table updates per second.")
    log_diffs = Int(20, config=True, help="How many of the newest versions' diffs %commits log renders.")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._selected: str | None = None  # the -c NAME of the line being run
        self.add_completer(_complete, "%commits", "%%commits")

    def commands(self) -> CommandTable:
        return {"connect": (_connect_arguments, self.connect),
                "disconnect": (disconnect_arguments(self.family), lambda parsed: self.disconnect(parsed.name)),
                "show": (_show_arguments, self.show), "log": (_log_arguments, self.log),
                "diff": (_diff_arguments, self.diff), "revert": (_revert_arguments, self.revert),
                "delete": (_delete_arguments, self.delete), "refresh": (None, self.refresh),
                "status": (None, self.status)}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.token for s in self.sessions.values() if s.token)

    # -- entry point ----------------------------------------------------------------------------
    @line_cell_magic("commits")
    def commits(self, line: str, cell: str | None = None) -> Any:
        """Versioned configuration: connect, a live table of keys, values, history, commits.

        ::

            %commits connect URL [--zookeeper HOST:PORT --zk-path PATH] [--name NAME] [--token T]
            %commits                          a live table of keys (version, author, comment, mtime)
            %commits show KEY [VERSION]       a value (the latest, or that version's)
            %commits log KEY                  history: a DataFrame (.frame) and each version's diff
            %commits diff KEY [OLD [NEW]]     what changed (default: the latest commit)
            %commits revert KEY VERSION [-m MESSAGE]
            %commits delete KEY [-m MESSAGE]  an empty commit; the history stays
            %commits refresh                  read every key again (URL connections have no push)
            %commits disconnect [NAME]
            %commits NAME << show KEY         keep the result in NAME instead of showing it
            %commits -c NAME show KEY         use connection NAME for this line (default: the last one)

            %%commits KEY -m MESSAGE [--version N]
            ... the cell's body is committed as KEY's next version, byte for byte ...

        A stale version (someone committed first) is refused with a short error; nothing is lost.
        """
        return self.guarded(line, lambda: self._line(line) if cell is None else self._commit_cell(line, cell))

    def _line(self, line: str) -> Any:
        capture, line = split_capture(line)
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"commits: {exc}") from None
        selected = None
        if words and words[0] in ("-c", "--connection"):  # `-c NAME` picks a connection for this line
            if len(words) < 2:
                raise UsageError("commits: -c needs a connection name")
            selected, words = words[1], words[2:]
            self._session(selected)  # an unknown name is an error before anything runs
        self._selected = selected
        try:
            if not words:
                result = self.table()
            else:
                result = self.dispatch(words[0], words[1:])
        finally:
            self._selected = None
        return self.keep(capture, result)

    def status(self, args: list[str]) -> str:
        session = self._session()
        keys = count(len(session.keys()), "key")
        return f"{session.name}: {session.target}: {session.connection_status()}, {keys}"

    # -- connections --------------------------------------------------------------------------------
    def connect(self, args: Any) -> None:
        if not args.url and not args.zookeeper:
            raise UsageError("commits connect: give the server's URL, or --zookeeper HOST:PORT --zk-path PATH")
        if bool(args.zookeeper) != bool(args.zk_path):
            raise UsageError("commits connect: --zookeeper and --zk-path go together")
        self.sessions.check_name(args.name)
        try:
            session = CommitsSession(args.name, args.url, args.zookeeper, args.zk_path,
                                     author=args.author or self.author or "", timeout=self.timeout,
                                     serialization=SERIALIZATIONS[self.serialization],
                                     token=args.token or stack_token(args.url))
        except (CommitsError, ConfigurationError) as exc:
            raise UsageError(f"commits: cannot connect: {exc}") from None
        self.sessions.add(args.name, session)
        how = ("live: commits made anywhere show as they land (ZooKeeper)" if session.live else
               "the HTTP API has no push channel: the table shows this notebook's commits and "
               "re-reads on Refresh")
        print(f"connected to {session.target} as {args.name!r}: {count(len(session.keys()), 'key')}; {how}")

    def _session(self, name: str | None = None) -> CommitsSession:
        """The named session, else the line's ``-c NAME``, else the current one."""
        session: CommitsSession = self.sessions.require(name or self._selected)
        return session

    # -- reading --------------------------------------------------------------------------------------
    def table(self) -> Any:
        """The live table of the current connection's keys."""
        from workbench_jupyter.commits_dashboard import CommitsDashboard

        session = self._session()
        origin = (f"live from ZooKeeper {session.zookeeper}{session.zk_path}" if session.live else
                  f"{redact(session.url or '')} · no push channel: updates on this notebook's commits and Refresh")
        dashboard = CommitsDashboard(session.source, title=session.name, origin=origin,
                                     refresh=None if session.live else session.refresh,
                                     max_rate=self.dashboard_max_rate)
        return session.add_dashboard(dashboard)

    def show(self, args: Any) -> Any:
        session = self._session()
        if session.client is None:
            if args.version is not None:
                session.writer()  # versions live on the server: say the URL is needed
            commit = session.mirror.get(args.key)
            if commit is None:
                raise UsageError(f"commits: no key {args.key!r}")
        else:
            commit = self._call(lambda: session.writer().get(args.key, args.version))
        if commit.empty:
            print(f"{args.key} version {commit.version} is empty (deleted)")
            return None
        return _value_of(commit)

    def log(self, args: Any) -> CommitHistory:
        client = self._session().writer()
        commits = self._call(lambda: client.history(args.key))
        if not commits:
            raise UsageError(f"commits: no key {args.key!r}")
        return CommitHistory(args.key, commits, shown=self.log_diffs)

    def diff(self, args: Any) -> CommitDiff:
        client = self._session().writer()

        def compare() -> list[str]:
            new = client.get(args.key, args.new)
            old_version = new.version - 1 if args.old is None else args.old
            old = client.get(args.key, old_version) if old_version >= 1 else None
            return unified_diff(old, new, key=args.key)

        return CommitDiff(self._call(compare))

    # -- writing --------------------------------------------------------------------------------------
    def revert(self, args: Any) -> None:
        client = self._session().writer()
        commit = self._call(lambda: client.revert(args.key, args.version, comment=args.message))
        print(f"reverted {args.key} to version {args.version}: now version {commit.version}")

    def delete(self, args: Any) -> None:
        client = self._session().writer()
        commit = self._call(lambda: client.delete(args.key, comment=args.message))
        print(f"deleted {args.key}: version {commit.version} is empty")

    def refresh(self, args: list[str]) -> None:
        if args:
            raise UsageError("commits refresh takes no arguments")
        session = self._session()
        if session.live:
            print("the table follows ZooKeeper: nothing to refresh")
            return
        changed = self._call(session.refresh)
        print(f"refreshed: {count(changed, 'key')} changed")

    def _commit_cell(self, line: str, cell: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"commits: {exc}") from None
        args = self.parse(_cell_arguments, words, "cell")
        client = self._session(args.connection).writer()
        commit = self._call(lambda: client.save(args.key, payload=cell, comment=args.message,
                                                version=args.version,
                                                # %config CommitsMagic.author counts after connect too
                                                author=args.author or self.author or None))
        print(f"committed {commit.key} version {commit.version}")

    def _call(self, action: Callable[[], Any]) -> Any:
        """Run a client call; its errors become one-line UsageErrors."""
        try:
            return action()
        except HttpCommitConflict as exc:
            raise UsageError(f"commits: conflict: {exc.key!r} is at version {exc.expected_version - 1}, "
                             f"so the next version is {exc.expected_version}, not {exc.provided_version}; "
                             "someone committed first and nothing was overwritten") from None
        except CommitNotFound as exc:
            raise UsageError(f"commits: not found: {exc}") from None
        except (CommitsHttpError, CommitServerUnreachable, InvalidCommit, CommitsError) as exc:
            raise UsageError(f"commits: {exc}") from None


# -- tab completion ---------------------------------------------------------------------------------------
def _complete(shell: Any, event: Any) -> list[str]:
    """Complete commands and keys after ``%commits`` / ``%%commits`` (keys come from the live view)."""
    magics = _commits_magics(shell)
    if magics is None:
        return []
    before = event.text_until_cursor
    words = before.split()
    if not words:
        return []
    completing_new_word = before.endswith((" ", "\t"))
    selected = None
    if len(words) > 2 and words[1] in ("-c", "--connection") and (len(words) > 3 or completing_new_word):
        selected, words = words[2], words[:1] + words[3:]  # `%commits -c NAME ...`: that connection's keys
    position = len(words) if completing_new_word else len(words) - 1  # index of the word being typed
    try:
        keys = magics._session(selected).keys()
    except UsageError:
        keys = []
    is_cell = words[0].startswith("%%")
    if position == 1:
        return keys if is_cell else [*COMMANDS, *keys]
    if position == 2 and not is_cell and words[1] in KEY_COMMANDS:
        return keys
    return []


def _commits_magics(shell: Any) -> CommitsMagic | None:
    for configurable in getattr(shell, "configurables", []):
        if isinstance(configurable, CommitsMagic):
            return configurable
    return None
