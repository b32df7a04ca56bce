"""``workbench inventory serve|exec|exec-auth|status|check``: builds servers and clients from flags, nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from workbench.errors import ConfigurationError
from workbench.inventory.protocol import DEFAULT_ADDRESS
from workbench.servers import serve_until_signalled

DEFAULT_WEB_PORT = 8081
#: where ``serve`` and ``check`` read the store URL when --store is not given (a password stays off ps)
STORE_VARIABLE = "WORKBENCH_INVENTORY_STORE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="inventory_command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run an inventory server (primary, or secondary with --master)")
    serve.add_argument("--store", help=f"SQLAlchemy URL of the inventory database (default: ${STORE_VARIABLE})")
    serve.add_argument("--socket", default=DEFAULT_ADDRESS,
                       help=f"the application port: a Unix socket path (default {DEFAULT_ADDRESS})")
    serve.add_argument("--admin", action="append", default=[], metavar="USER",
                       help="a user who may authorize and revoke (besides this server's own user and root)")
    serve.add_argument("--user", action="append", default=[], metavar="USER", dest="users",
                       help="a user who may run applications, as itself ('*': every local user; a server "
                            "not run as root serves its own user only)")
    serve.add_argument("--web-port", type=int, default=DEFAULT_WEB_PORT,
                       help=f"web port (default {DEFAULT_WEB_PORT}; -1: no web server)")
    serve.add_argument("--master", help="the shared database of the primary: start as a secondary server "
                       "(with a different --store, that database keeps a local copy of the image)")
    serve.add_argument("--host", default="127.0.0.1", help="address of the web port and the name recorded for this server (default 127.0.0.1)")
    serve.add_argument("--server-id", help="name of this server in inv_servers (default host-pid-random)")
    serve.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default 1)")
    serve.add_argument("--takeover-after", type=float, default=10.0,
                       help="seconds without a primary heartbeat before a secondary takes over (default 10)")
    serve.add_argument("--poll", type=float, default=0.05,
                       help="seconds between change log polls (default 0.05: one single-row query each)")
    serve.add_argument("--app-timeout", type=float, default=3600.0, help="longest application run in seconds")
    serve.add_argument("--keep-changes", type=int, default=100000,
                       help="changes kept in the log for secondaries (default 100000)")
    serve.add_argument("--lazy-files", action="store_true", help="read a block's files on first access (primary)")
    serve.add_argument("-v", "--verbose", action="count", default=0)
    try:
        from workbench.inventory.web.options import add_web_arguments
    except ImportError:  # the web part is optional
        pass
    else:
        add_web_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    run = commands.add_parser("exec", help="run a script as an application")
    run.add_argument("script", help="the Python script")
    run.add_argument("--write", action="store_true", help="keep its changes (needs exec-auth)")
    run.add_argument("--title", help="application title (default: the script's file name)")
    run.add_argument("--user", help="run under this user's authorization (admins only; default: you)")
    run.add_argument("--server", help=f"the server's socket path (default {DEFAULT_ADDRESS}, trusted when its server "
                       "runs as root or as you)")
    run.add_argument("--timeout", type=float, help="kill the script after this many seconds")
    run.add_argument("args", nargs=argparse.REMAINDER,
                     help="arguments for the script (the options above may also follow SCRIPT; after -- all is the script's)")
    run.set_defaults(func=cmd_exec)

    auth = commands.add_parser("exec-auth", help="authorize a script to write (by its SHA-256), list or revoke")
    auth.add_argument("script", nargs="?", help="the script to authorize")
    auth.add_argument("--title", help="application title")
    auth.add_argument("--user", help="the user it authorizes (default: you)")
    auth.add_argument("--server", help=f"the server's socket path (default {DEFAULT_ADDRESS}, trusted when its server "
                       "runs as root or as you)")
    auth.add_argument("--revoke", action="store_true", help="remove the authorization of --title/--user")
    auth.add_argument("--list", action="store_true", help="list authorizations")
    auth.set_defaults(func=cmd_exec_auth)

    status = commands.add_parser("status", help="a server's role, status and versions (JSON)")
    status.add_argument("--server", help=f"the server's socket path (default {DEFAULT_ADDRESS}, trusted when its server "
                       "runs as root or as you)")
    status.add_argument("--checksum", action="store_true", help="include the checksum of the RAM image")
    status.add_argument("--servers", action="store_true", help="list every server of the database instead")
    status.set_defaults(func=cmd_status)
    check = commands.add_parser("check", help="list blocks whose stored files do not add up to their totals")
    check.add_argument("--store", help=f"SQLAlchemy URL of the inventory database (default: ${STORE_VARIABLE})")
    check.add_argument("--repair", action="store_true",
                       help="set those blocks' totals to their files' sums (stop the primary first)")
    check.set_defaults(func=cmd_check)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def cmd_serve(args: argparse.Namespace) -> int:
    from workbench.inventory.server import InventoryServer

    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web_factory = None
    if args.web_port >= 0 and hasattr(args, "web_address"):
        from workbench.inventory.web.options import web_server_from_arguments

        def web_factory(inventory: Any, port: int, apply: Any) -> Any:
            return web_server_from_arguments(args, inventory, port, apply)

    server = InventoryServer(_store_url(args), host=args.host, socket_path=args.socket, admins=args.admin, users=args.users,
                             web_port=None if args.web_port < 0 else args.web_port, master_url=args.master,
                             server_id=args.server_id, heartbeat=args.heartbeat, takeover_after=args.takeover_after,
                             poll_interval=args.poll, app_timeout=args.app_timeout, lazy_files=args.lazy_files,
                             keep_changes=args.keep_changes,
                             web_factory=web_factory)
    serve_until_signalled(server, lambda: print(json.dumps({"server": server.server_id, "role": server.role,
                                                            "address": server.address, "web": server.web_url}),
                                                flush=True))
    return 0


def _read_script(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the script: {exc}", script=path) from None


def cmd_exec(args: argparse.Namespace) -> int:
    from workbench.inventory.client import InventoryClient

    _options_after_script(args)
    script = _read_script(args.script)
    name = Path(args.script).name
    arguments = args.args
    with InventoryClient(args.server) as client:
        result = client.exec_script(script, name=name, args=arguments, write=args.write, title=args.title or name,
                                    user=args.user, timeout=args.timeout)
    sys.stdout.write(result["stdout"])
    sys.stderr.write(result["stderr"])
    if result["status"] != "done":
        print(f"workbench: application {result['status']}"
              + (f" with exit code {result['exit_code']}" if result["exit_code"] is not None else "")
              + "; no change applied", file=sys.stderr)
    elif args.write:
        applied = result.get("applied") or {"changes": 0}
        print(f"workbench: {applied['changes']} change(s) applied", file=sys.stderr)
    if result["status"] == "failed":
        return int(result["exit_code"] or 1)
    return 0 if result["status"] == "done" else 1


def _options_after_script(args: argparse.Namespace) -> None:
    """``exec SCRIPT --write --title T ARGS``: take our options out of what follows SCRIPT (up to ``--``)."""
    tail = list(args.args)
    cut = tail.index("--") if "--" in tail else len(tail)
    before, after = tail[:cut], tail[cut + 1:]
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own.add_argument("--write", action="store_true")
    for flag in ("--title", "--user", "--server"):
        own.add_argument(flag)
    own.add_argument("--timeout", type=float)
    known, rest = own.parse_known_args(before)
    args.write = args.write or known.write
    for name in ("title", "user", "timeout"):
        if getattr(known, name) is not None:
            setattr(args, name, getattr(known, name))
    if known.server is not None:
        args.server = known.server
    args.args = rest + after


def cmd_exec_auth(args: argparse.Namespace) -> int:
    from workbench.inventory.client import InventoryClient

    with InventoryClient(args.server) as client:
        if args.list:
            for entry in client.authorizations():
                print(f"{entry['title']}\t{entry['user']}\t{entry['checksum']}")
            return 0
        if not args.title:
            raise ConfigurationError("--title is required")
        if args.revoke:
            revoked = client.revoke(args.title, args.user)
            print("revoked" if revoked else "no such authorization")
            return 0 if revoked else 1
        if not args.script:
            raise ConfigurationError("give the SCRIPT to authorize")
        entry = client.authorize(_read_script(args.script), args.title, args.user)
    print(f"authorized {entry['title']} for {entry['user']}: sha256 {entry['checksum']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from workbench.inventory.client import InventoryClient

    with InventoryClient(args.server) as client:
        answer: Any = client.servers() if args.servers else client.status(checksum=args.checksum)
    print(json.dumps(answer, indent=2, sort_keys=True, default=str))
    return 0


def _store_url(args: argparse.Namespace) -> str:
    """The store URL from --store (warning when it carries a password: ps shows it) or the environment."""
    from workbench.credentials import url_from

    url = url_from(args.store, "--store", STORE_VARIABLE)
    if not url:
        raise ConfigurationError(f"give the inventory database: --store URL or ${STORE_VARIABLE}")
    return url


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when every block adds up (or all were repaired), 1 when some do not."""
    from workbench.inventory.store import Store

    store = Store(_store_url(args))
    try:
        differing = store.repair() if args.repair else store.check()
    finally:
        store.close()
    for entry in differing:
        print(f"{entry['block']}: declares {entry['num_files']} files / {entry['size']} bytes, "
              f"its files: {entry['found_files']} / {entry['found_size']}"
              + ("  -> repaired" if args.repair else ""))
    if not differing:
        print("every block adds up")
    elif not args.repair:
        print(f"{len(differing)} block(s) do not add up; `workbench inventory check --repair --store URL` "
              "sets their totals to their files' sums", file=sys.stderr)
    return 0 if args.repair or not differing else 1
