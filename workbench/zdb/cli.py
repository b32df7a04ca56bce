"""``workbench zdb serve|replica|shell``: builds servers and clients from flags, nothing more."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from workbench.zdb.transport import DEFAULT_URI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="zdb_command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a storage manager (read-write) on an archive directory")
    serve.add_argument("path", help="archive directory (created if missing)")
    serve.add_argument("--bind", default=DEFAULT_URI, help=f"client endpoint (default {DEFAULT_URI})")
    serve.add_argument("--publish", default=None, help="change stream endpoint (default: same host, free port)")
    serve.add_argument("--fsync", choices=["always", "batch", "never"], default="batch",
                       help="power-loss durability: fsync every write, each batch (group commit), or never")
    serve.add_argument("--history", type=int, default=1000, help="undo steps kept (default 1000)")
    serve.add_argument("--dba-user", help="require clients to log in as this database user")
    serve.add_argument("--dba-password", help="password of --dba-user")
    serve.set_defaults(func=cmd_serve)

    replica = commands.add_parser("replica", help="run a transaction engine (read replica) of a primary")
    replica.add_argument("--primary", required=True, help="the storage manager's endpoint")
    replica.add_argument("--bind", default="tcp://127.0.0.1:5561", help="client endpoint (default port 5561)")
    replica.set_defaults(func=cmd_replica)

    shell = commands.add_parser("shell", help="the zdb prompt: Python syntax against `db`")
    shell.add_argument("write_uri", nargs="?", default=DEFAULT_URI)
    shell.add_argument("read_uri", nargs="?", default=None)
    shell.add_argument("--read-your-writes", action="store_true", help="reads on the replica wait for your writes")
    shell.set_defaults(func=cmd_shell)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _serve(server: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server.start()
    # The handlers run on the main thread between waits; stop() wakes the server loop.
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: server.stop())
    print(f"zdb {server.role} serving on {server.address}", flush=True)
    while not server.wait(0.5):
        pass
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from workbench.errors import ConfigurationError
    from workbench.zdb.server import StorageManager

    if bool(args.dba_user) != bool(args.dba_password):
        raise ConfigurationError("--dba-user and --dba-password go together")
    users = {args.dba_user: args.dba_password} if args.dba_user else None
    return _serve(StorageManager(args.path, bind=args.bind, publish_bind=args.publish, fsync=args.fsync,
                                 history_limit=args.history, users=users))


def cmd_replica(args: argparse.Namespace) -> int:
    from workbench.zdb.server import TransactionEngine

    return _serve(TransactionEngine(args.primary, bind=args.bind))


def cmd_shell(args: argparse.Namespace) -> int:
    from workbench.zdb.shell import run_shell

    return run_shell(args.write_uri, args.read_uri, read_your_writes=args.read_your_writes)
