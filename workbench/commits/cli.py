"""``workbench commits`` / ``python -m workbench.commits``: pyrainer's command line, plus ``serve``.

::

    python -m workbench.commits --url http://localhost:8080/diary list
    python -m workbench.commits --url http://localhost:8080/diary show hey
    python -m workbench.commits --url http://localhost:8080/diary edit hey     # $EDITOR, diff, confirm
    python -m workbench.commits --url http://localhost:8080/diary log hey      # history as diffs
    workbench commits serve --storage sqlite:///commits.db --port 8080 --prefix /diary
    workbench commits serve --storage sqlite:///commits.db --payload yaml     # json (default), bytes, properties
    workbench commits serve --storage sqlite:///commits.db --auth-file ~/.commits.auth   # 0600: token:SECRET

A *prepared* commit (what ``prepare`` prints, ``edit`` opens and ``commit`` reads) is a YAML
header of metadata, a line ``---``, then the payload exactly as it will be stored::

    author: gian
    comment: ''
    version: 2
    ---
    {"hey":"what"}

Errors (a missing key, a stale version, no server) print one line on stderr and exit 1.
An ``edit`` with nothing to commit (the value unchanged, or the editor failing) exits 1 too.

Secrets never need the command line, where ``ps`` shows them to every local user: ``serve`` reads
its write credentials from ``--auth-file`` or ``$WORKBENCH_COMMITS_AUTH`` and its storage URL from
``$WORKBENCH_COMMITS_STORAGE``; the client commands read ``$WORKBENCH_COMMITS_TOKEN``. A secret
given as a flag still works, with a warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from workbench.credentials import url_from, url_has_password, warn_secret_on_command_line

#: where --url comes from when it is not given (a wrapper script can export it instead)
URL_ENVIRONMENT = "WORKBENCH_COMMITS_URL"
#: where ``serve``'s write credentials come from when neither --auth-file nor --auth is given
AUTH_ENVIRONMENT = "WORKBENCH_COMMITS_AUTH"
#: where ``serve --storage`` comes from when it is not given (a database URL may hold a password)
STORAGE_ENVIRONMENT = "WORKBENCH_COMMITS_STORAGE"
#: where the client commands' bearer token comes from when --token is not given
TOKEN_ENVIRONMENT = "WORKBENCH_COMMITS_TOKEN"
#: the largest secret file read (a token or user:password, not a document)
MAX_SECRET_FILE = 64 * 1024
#: separates the metadata header from the payload in a prepared commit
SEPARATOR = "\n---\n"

#: ``serve --payload`` choices (workbench.commits.payloads.PAYLOAD_CHOICES, kept here so that
#: building the parser imports no server code)
PAYLOAD_NAMES = ("json", "bytes", "yaml", "properties", "suffix")

CLIENT_COMMANDS = ("list", "show", "prepare", "edit", "commit", "commit-value", "uncommit", "log")


# -- argument parsing -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the client commands (pyrainer's) and ``serve`` to ``parser`` (``workbench commits``)."""
    _client_options(parser)
    commands = parser.add_subparsers(dest="commits_command", metavar="COMMAND")

    def client_command(name: str, help_text: str, func: Callable[[argparse.Namespace], int],
                       key: bool = True, version: bool = True) -> argparse.ArgumentParser:
        # --url and friends also work after the command (`... list --url URL`): workbench.cli
        # shares a group's options with its commands
        sub = commands.add_parser(name, help=help_text)
        if key:
            sub.add_argument("key", help="commit key")
        if version:
            sub.add_argument("version", type=int, nargs="?", help="commit version (default: the latest)")
        sub.set_defaults(func=func)
        return sub

    listing = client_command("list", "keys with their latest version and URL", cmd_list, key=False,
                             version=False)
    listing.add_argument("-A", "--all", action="store_true", help="include deleted (empty) keys")
    client_command("show", "print a key's value", cmd_show)
    client_command("prepare", "print the next commit of a key, ready to edit", cmd_prepare)
    client_command("edit", "edit a key in $EDITOR, review the diff, then commit", cmd_edit)
    client_command("commit", "commit a prepared commit read from stdin", cmd_commit, version=False)
    commit_value = client_command("commit-value", "commit stdin as a key's value", cmd_commit_value)
    commit_value.add_argument("-m", "--message", required=True, help="commit message")
    uncommit = client_command("uncommit", "delete a key (an empty commit), after confirmation", cmd_uncommit)
    uncommit.add_argument("-y", "--yes", action="store_true", help="do not ask")
    client_command("log", "a key's history, newest first, as diffs", cmd_log)

    serve = commands.add_parser("serve", help="run a commits HTTP server (Rainer's API)")
    serve.add_argument("--storage", help="SQLAlchemy URL: sqlite:///file.db, mysql+pymysql://..., "
                       f"postgresql+psycopg://... (default: ${STORAGE_ENVIRONMENT}, where a password stays "
                       "out of the process list)")
    serve.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--prefix", default="", help="path prefix of the API, e.g. /diary")
    serve.add_argument("--zookeeper", metavar="HOST:PORT", help="ZooKeeper to publish heads to")
    serve.add_argument("--zk-path", metavar="PATH", help="znode path of the keeper, e.g. /rainer/diary")
    serve.add_argument("--auth-file", metavar="PATH",
                       help="require credentials on writes, read from PATH (mode 0600, yours): one line "
                       "token:SECRET or basic:USER:PASSWORD")
    serve.add_argument("--auth", metavar="SPEC",
                       help="the same on the command line, where every local user sees it in ps (a warning "
                       f"says so); prefer --auth-file or ${AUTH_ENVIRONMENT}, the default")
    serve.add_argument("--payload", choices=PAYLOAD_NAMES, default="json",
                       help="what a POSTed payload must be: json (the default, as Rainer's stock server), bytes "
                       "(anything), yaml, properties (Java .properties), or suffix (by the key's suffix: "
                       ".yaml/.yml, .properties, .txt, .bin, else json)")
    serve.add_argument("--access-log", action="store_true", help="log every request (default: server errors only)")
    serve.add_argument("--publish-period", type=float, default=30.0,
                       help="seconds between the leader's checks that ZooKeeper holds every head (default 30)")
    serve.add_argument("--zk-heal", choices=("exact", "forward"), default="exact",
                       help="exact: ZooKeeper made equal to this storage (default); forward: only add what "
                            "it lacks or holds older, as Rainer's publisher does (beside a JVM Rainer)")
    serve.set_defaults(func=cmd_serve)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", metavar="URL", help="the commits server, e.g. http://localhost:8080/diary "
                        f"(default: ${URL_ENVIRONMENT})")
    parser.add_argument("--token", help="bearer token for servers that require one on writes; visible in ps, "
                        f"so prefer ${TOKEN_ENVIRONMENT}, the default")
    parser.add_argument("--author", help="author of new commits (default: your login name)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the server (default 10)")
    parser.add_argument("--color", choices=["auto", "always", "never"],
                        help="colour diffs (default: auto, on a terminal)")


# -- plumbing ------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Any:
    from workbench.commits.client import RainerClient
    from workbench.errors import ConfigurationError

    url = getattr(args, "url", None) or os.environ.get(URL_ENVIRONMENT)
    if not url:
        raise ConfigurationError(f"--url is required (or set ${URL_ENVIRONMENT})")
    if getattr(args, "url", None) and url_has_password(args.url):
        warn_secret_on_command_line("--url holds a password", URL_ENVIRONMENT)
    token = getattr(args, "token", None)
    if token:
        warn_secret_on_command_line("--token", TOKEN_ENVIRONMENT)
    options: dict[str, Any] = {"token": token or os.environ.get(TOKEN_ENVIRONMENT) or None}
    if getattr(args, "timeout", None):
        options["timeout"] = args.timeout
    return RainerClient(url, **options)


# -- secrets -------------------------------------------------------------------------------------------
def read_secret_file(path: str) -> str:
    """The first line of ``path``, a regular file of yours that only you can read (like ssh's keys).

    Anything else is a ``ConfigurationError`` that names the path and what to do, never its content.
    """
    import stat

    from workbench.errors import ConfigurationError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the secret file {path}: {exc.strerror}", path=path) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"the secret file {path} is not a regular file", path=path)
        if info.st_mode & 0o077:
            raise ConfigurationError(f"the secret file {path} is open to other users (mode "
                                     f"{stat.S_IMODE(info.st_mode):04o}): chmod 0600 it", path=path)
        if info.st_uid not in (os.geteuid(), 0):
            raise ConfigurationError(f"the secret file {path} belongs to another user (uid {info.st_uid})",
                                     path=path)
        data = handle.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise ConfigurationError(f"the secret file {path} is larger than {MAX_SECRET_FILE} bytes", path=path)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigurationError(f"the secret file {path} is not UTF-8 text", path=path) from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigurationError(f"the secret file {path} is empty", path=path)
    return secret


def serve_auth_spec(args: argparse.Namespace) -> str | None:
    """The write credentials ``serve`` was given: --auth-file, else --auth (with a warning), else
    ``$WORKBENCH_COMMITS_AUTH``, else None (anonymous writes)."""
    from workbench.errors import ConfigurationError

    if args.auth_file and args.auth:
        raise ConfigurationError("give --auth-file or --auth, not both")
    if args.auth_file:
        return read_secret_file(args.auth_file)
    if args.auth:
        warn_secret_on_command_line("--auth", AUTH_ENVIRONMENT + " or use --auth-file")
        return args.auth
    return os.environ.get(AUTH_ENVIRONMENT) or None


def _author(args: argparse.Namespace) -> str:
    from workbench.commits.client import default_author

    return getattr(args, "author", None) or default_author()


class Terminal:
    """Where the commands write: stdout, with or without ANSI colours."""

    COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}

    def __init__(self, mode: str | None, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        if mode in (None, "auto"):
            self.colour = self.out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        else:
            self.colour = mode == "always"

    def paint(self, text: str, colour: str) -> str:
        if not self.colour:
            return text
        # keep the newline outside the escape codes, so the colour never bleeds into the next line
        body, newline = (text[:-1], "\n") if text.endswith("\n") else (text, "")
        return f"\033[{self.COLOURS[colour]}m{body}\033[0m{newline}"

    def write(self, text: str = "", colour: str | None = None) -> None:
        self.out.write(self.paint(text, colour) if colour else text)

    def line(self, text: str = "", colour: str | None = None) -> None:
        self.write(text + "\n", colour)

    def diff(self, old_text: str, new_text: str, old_name: str, new_name: str) -> None:
        """A unified diff, coloured like git's: headers bold, removals red, additions green."""
        from workbench.commits.client import diff_lines

        for line in diff_lines(old_text, new_text, old_name, new_name):
            if line.startswith(("---", "+++")):
                self.write(line, "bold")
            elif line.startswith("-"):
                self.write(line, "red")
            elif line.startswith("+"):
                self.write(line, "green")
            else:
                self.write(line)
        self.out.flush()


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


# -- prepared commits ----------------------------------------------------------------------------------
def prepare_commit(meta: dict[str, Any], value: bytes | None) -> bytes:
    """A commit as editable text: YAML metadata, ``---``, the payload bytes untouched."""
    import yaml

    header = yaml.safe_dump(meta, default_flow_style=False, allow_unicode=True, sort_keys=True)
    return header.encode("utf-8") + b"---\n" + (value or b"")


def split_prepared(prepared: bytes) -> tuple[dict[str, Any], bytes]:
    """A prepared commit -> (metadata, payload bytes). Only the first ``---`` line separates: the
    payload may itself be a multi-document YAML file."""
    import yaml

    from workbench.commits.model import InvalidCommit

    text_separator = SEPARATOR.encode()
    if prepared.startswith(b"---\n"):
        header, payload = b"", prepared[4:]
    elif text_separator in prepared:
        header, payload = prepared.split(text_separator, 1)
    else:
        raise InvalidCommit("a prepared commit is a YAML header, a line '---', then the value",
                            reason="no separator")
    try:
        meta = yaml.safe_load(header.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidCommit(f"the header of the prepared commit is not YAML: {exc}", reason="header") from None
    if not isinstance(meta, dict):
        raise InvalidCommit("the header of a prepared commit is a YAML mapping (author, comment, version)",
                            reason="header")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidCommit("the header's version must be an integer", version=version, reason="version")
    return meta, payload


def next_commit(current_version: int, value: bytes | None, author: str, empty: bool = False) -> dict[str, Any]:
    """The metadata of the commit after ``current_version`` (what ``prepare`` and ``edit`` start from)."""
    meta: dict[str, Any] = {"version": current_version + 1, "author": author, "comment": ""}
    if empty:
        meta["empty"] = True
    return meta


def post_prepared(client: Any, key: str, prepared: bytes) -> dict[str, Any]:
    """Post a prepared commit for ``key``; returns the stored metadata."""
    meta, payload = split_prepared(prepared)
    meta["key"] = key
    return client.post_commit(meta, None if meta.get("empty") else payload)


def _current(client: Any, key: str, version: int | None) -> tuple[dict[str, Any], bytes | None]:
    """Metadata and value of ``key`` (version 0 and nothing when the key does not exist yet)."""
    from workbench.commits.client import CommitNotFound

    try:
        commit = client.get_commit(key, version)
    except CommitNotFound:
        if version is not None:
            raise
        return {"key": key, "version": 0}, None
    return commit.meta, commit.value


def _print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, sort_keys=True))


def _ask(terminal: Terminal, question: str) -> bool:
    """Ask until the answer is 'yes' or 'no'; end of input counts as no."""
    prompt = question
    while True:
        terminal.out.write(prompt)
        terminal.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            terminal.line()
            return False
        answer = answer.strip().lower()
        if answer in ("yes", "no"):
            return answer == "yes"
        prompt = "Please type 'yes' or 'no': "


def confirm_and_post(client: Any, terminal: Terminal, key: str, current: bytes | None,
                     prepared: bytes) -> bool:
    """Show what the prepared commit changes, ask, and post it on 'yes'. True when posted."""
    if _unchanged(prepared, current):
        terminal.line("No change, not committing.")
        return False
    meta, payload = split_prepared(prepared)
    new_value = None if meta.get("empty") else payload
    terminal.diff(_text(current), _text(new_value), f"{key} (current)", f"{key} (new)")
    if not _ask(terminal, f"Commit to {client.commit_uri(key)} (yes/no)? "):
        terminal.line("OK, not committing.")
        return False
    _print_json(post_prepared(client, key, prepared))
    return True


# -- commands ----------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        listing = client.list(args.all)
        for key in sorted(listing):
            meta = listing[key]
            version = int(meta["version"])
            marker = "\t(empty)" if meta.get("empty") else ""
            print(f"{key}\t{version}\t{client.commit_uri(key, version)}{marker}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        commit = client.get_commit(args.key, args.version)
        if commit.value is None:
            print(f"{args.key} version {commit.meta['version']} is empty (deleted)", file=sys.stderr)
            return 0
        out = sys.stdout.buffer
        out.write(commit.value)
        if not commit.value.endswith(b"\n"):
            out.write(b"\n")
        out.flush()
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    with _client(args) as client:
        meta, value = _current(client, args.key, args.version)
        head = int(client.get_metadata(args.key)["version"]) if args.version is not None else int(meta["version"])
        prepared = prepare_commit(next_commit(head, value, _author(args)), value)
        sys.stdout.buffer.write(prepared)
        sys.stdout.buffer.flush()
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(post_prepared(client, args.key, sys.stdin.buffer.read()))
    return 0


def cmd_commit_value(args: argparse.Namespace) -> int:
    from workbench.commits.client import CommitNotFound

    with _client(args) as client:
        version = args.version
        if version is None:
            try:
                version = int(client.get_metadata(args.key)["version"]) + 1
            except CommitNotFound:
                version = 1
        meta = {"key": args.key, "version": version, "author": _author(args), "comment": args.message}
        _print_json(client.post_commit(meta, sys.stdin.buffer.read()))
    return 0


def cmd_uncommit(args: argparse.Namespace) -> int:
    """An empty commit after VERSION (default: the head); a VERSION that is no longer the head is a
    conflict, so nobody deletes a value they have not seen."""
    from workbench.commits.client import CommitNotFound

    terminal = Terminal(getattr(args, "color", None))
    with _client(args) as client:
        meta, value = _current(client, args.key, args.version)
        if int(meta["version"]) == 0:
            raise CommitNotFound(f"no key {args.key!r} to uncommit", status=404, body="Key not found",
                                 method="GET", url=client.commit_uri(args.key))
        if meta.get("empty"):
            print(f"{args.key} version {meta['version']} is already empty, not committing.")
            return 0
        prepared = prepare_commit(next_commit(int(meta["version"]), value, _author(args), empty=True), b"")
        if args.yes:
            _print_json(post_prepared(client, args.key, prepared))
        else:
            confirm_and_post(client, terminal, args.key, value, prepared)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    terminal = Terminal(getattr(args, "color", None))
    with _client(args) as client:
        meta, value = _current(client, args.key, args.version)
        # Editing an older version makes it the base of the next one, so the diff and the new
        # version are taken against the head.
        if args.version is not None:
            head_meta, head_value = _current(client, args.key, None)
        else:
            head_meta, head_value = meta, value
        prepared = prepare_commit(next_commit(int(head_meta["version"]), value, _author(args)), value)
        fd, name = tempfile.mkstemp(prefix=f"commit-{_safe_name(args.key)}-", suffix=".yaml")
        with os.fdopen(fd, "wb") as handle:
            handle.write(prepared)
        try:
            editor = os.environ.get("EDITOR") or os.environ.get("VISUAL") or "vi"
            code = subprocess.call([*shlex.split(editor), name])
            if code != 0:
                from workbench.errors import CommitsError

                raise CommitsError(f"the editor exited with code {code}", editor=editor)
            edited = Path(name).read_bytes()
            if confirm_and_post(client, terminal, args.key, head_value, edited):
                os.unlink(name)
            else:
                print(f"Your work is saved in: {name}")
                # Nothing to commit fails, as `git commit` does, so that a script does not take it
                # for a commit; a "no" to the question is the user's own answer, not a failure.
                if _unchanged(edited, head_value):
                    return 1
        except BaseException:
            print(f"An error was encountered. Your work is saved in: {name}", file=sys.stderr)
            raise
    return 0


def _unchanged(prepared: bytes, current: bytes | None) -> bool:
    """Whether a prepared commit would store what is there already (and is no deletion)."""
    meta, payload = split_prepared(prepared)
    return payload == current and not meta.get("empty")


def _safe_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)[:40]


def cmd_log(args: argparse.Namespace) -> int:
    terminal = Terminal(getattr(args, "color", None))
    with _client(args) as client:
        newer = client.get_commit(args.key, args.version)
        try:
            while int(newer.meta["version"]) > 0:
                version = int(newer.meta["version"])
                older = client.get_commit(args.key, version - 1) if version > 1 else None
                terminal.line(f"Commit {version}" + (" (empty)" if newer.meta.get("empty") else ""), "yellow")
                terminal.line(f"Author: {newer.meta.get('author', '')}")
                terminal.line(f"Date:   {newer.meta.get('mtime', '')}")
                terminal.line()
                comment = newer.meta.get("comment") or ""
                if comment:
                    for comment_line in comment.split("\n"):
                        terminal.line(f"  {comment_line}")
                    terminal.line()
                terminal.diff(_text(older.value if older else None), _text(newer.value),
                              f"{args.key} {version - 1}", f"{args.key} {version}")
                terminal.line()
                if older is None:
                    break
                newer = older
        finally:
            terminal.line("End of Log")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from workbench.commits.builder import create_rainer
    from workbench.commits.payloads import payload_serialization
    from workbench.errors import ConfigurationError
    from workbench.servers import serve_until_signalled

    if bool(args.zookeeper) != bool(args.zk_path):
        raise ConfigurationError("--zookeeper and --zk-path go together")
    storage = url_from(args.storage, "--storage", STORAGE_ENVIRONMENT)
    if not storage:
        raise ConfigurationError(f"--storage is required (or set ${STORAGE_ENVIRONMENT})")
    auth = serve_auth_spec(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rainer = create_rainer(storage, port=args.port, prefix=args.prefix, zookeeper=args.zookeeper,
                           zk_path=args.zk_path, auth=auth, address=args.host,
                           publish_period=args.publish_period, publish_fuzz=args.publish_period / 6,
                           access_log=args.access_log, serialization=payload_serialization(args.payload),
                           heal=args.zk_heal)
    serve_until_signalled(rainer, lambda: print(f"commits serving on {rainer.url}", flush=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workbench.commits ARGS`` is ``workbench commits ARGS``."""
    from workbench.cli import main as workbench_main

    return workbench_main(["commits", *(sys.argv[1:] if argv is None else argv)])
