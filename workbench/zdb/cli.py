"""``workbench zdb serve|replica|shell``: builds servers and clients from flags, nothing more."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from workbench.credentials import warn_secret_on_command_line
from workbench.servers import serve_until_signalled
from workbench.zdb.environment import DBA_PASSWORD_VARIABLE
from workbench.zdb.transport import DEFAULT_URI

#: where `replica` reads the password of --primary-user (by default it logs in with its own dba login)
PRIMARY_PASSWORD_VARIABLE = "WORKBENCH_ZDB_PRIMARY_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="zdb_command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a storage manager (read-write) on an archive directory")
    serve.add_argument("path", help="archive directory (created if missing)")
    serve.add_argument("--bind", default=DEFAULT_URI, help=f"client endpoint (default {DEFAULT_URI})")
    serve.add_argument("--publish", default=None, help="change stream endpoint (default: same host, free port)")
    serve.add_argument("--fsync", choices=["always", "batch", "never"], default="batch",
                       help="power-loss durability: fsync every write, each batch (group commit), or never")
    serve.add_argument("--history", type=int, default=1000, help="undo steps kept (default 1000)")
    serve.add_argument("--dba-user", help="require this database user's login on every socket (requests and "
                       "change stream)")
    serve.add_argument("--dba-password", help=f"password of --dba-user (default: ${DBA_PASSWORD_VARIABLE})")
    _curve_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    replica = commands.add_parser("replica", help="run a transaction engine (read replica) of a primary")
    replica.add_argument("--primary", required=True, help="the storage manager's endpoint")
    replica.add_argument("--bind", default="tcp://127.0.0.1:5561", help="client endpoint (default port 5561)")
    replica.add_argument("--dba-user", help="require clients of this engine to log in as this database user; "
                         "also the login it gives the storage manager unless --primary-user is given")
    replica.add_argument("--dba-password", help=f"password of --dba-user (default: ${DBA_PASSWORD_VARIABLE})")
    replica.add_argument("--primary-user", help="log in to the storage manager as this user (password from "
                         f"${PRIMARY_PASSWORD_VARIABLE})")
    _curve_server_flags(replica)
    _curve_client_flags(replica)
    replica.set_defaults(func=cmd_replica)

    shell = commands.add_parser("shell", help="the zdb prompt: Python syntax against `db`")
    shell.add_argument("write_uri", nargs="?", default=DEFAULT_URI)
    shell.add_argument("read_uri", nargs="?", default=None)
    shell.add_argument("--read-your-writes", action="store_true", help="reads on the replica wait for your writes")
    shell.add_argument("--user", help="database user (when the server requires one)")
    shell.add_argument("--password-file", help="file holding the database user's password")
    _curve_client_flags(shell)
    shell.set_defaults(func=cmd_shell)

    keygen = commands.add_parser("keygen", help="make a CURVE key pair: NAME.key (public) and NAME.key_secret")
    keygen.add_argument("directory")
    keygen.add_argument("name")
    keygen.set_defaults(func=cmd_keygen)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _curve_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve-cert", help="this server's secret certificate (enables CURVE encryption)")
    parser.add_argument("--allow-keys", help="directory of *.key public certificates of allowed clients "
                        "(default with --curve-cert: any client that speaks CURVE)")


def _curve_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-key", help="public certificate of the server to talk CURVE to")
    parser.add_argument("--client-cert", help="our secret certificate (default: a new key pair)")


def _server_security(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.errors import ConfigurationError
    from workbench.zdb.transport import CurveKeys, load_public_keys

    if not args.curve_cert:
        if args.allow_keys:
            raise ConfigurationError("--allow-keys needs --curve-cert")
        return {}
    return {"curve": CurveKeys.load(args.curve_cert),
            "allowed_clients": load_public_keys(args.allow_keys) if args.allow_keys else None}


def _client_security(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.zdb.transport import CurveKeys, load_public_key

    if not args.server_key:
        return {}
    return {"server_key": load_public_key(args.server_key),
            "keys": CurveKeys.load(args.client_cert) if args.client_cert else None}


def _serve(server: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # the domain's supervisor reads this line from the log: the server is bound
    serve_until_signalled(server, lambda: print(f"zdb {server.role} serving on {server.address}", flush=True))
    return 0


def _users(args: argparse.Namespace) -> dict[str, str] | None:
    from workbench.errors import ConfigurationError

    # The environment keeps the password out of the command line, which `ps` shows to every user.
    password = args.dba_password or os.environ.get(DBA_PASSWORD_VARIABLE)
    if bool(args.dba_user) != bool(password):
        raise ConfigurationError(f"--dba-user and --dba-password (or {DBA_PASSWORD_VARIABLE}) go together")
    if args.dba_password:
        warn_secret_on_command_line("--dba-password", DBA_PASSWORD_VARIABLE)
    return {args.dba_user: password} if args.dba_user else None


def cmd_serve(args: argparse.Namespace) -> int:
    from workbench.zdb.server import StorageManager

    users = _users(args)
    return _serve(StorageManager(args.path, bind=args.bind, publish_bind=args.publish, fsync=args.fsync,
                                 history_limit=args.history, users=users, **_server_security(args)))


def cmd_replica(args: argparse.Namespace) -> int:
    from workbench.zdb.server import TransactionEngine

    from workbench.errors import ConfigurationError

    client_side = _client_security(args)
    primary_login: dict[str, Any] = {}
    if args.primary_user:
        password = os.environ.get(PRIMARY_PASSWORD_VARIABLE)
        if not password:
            raise ConfigurationError(f"--primary-user needs its password in ${PRIMARY_PASSWORD_VARIABLE}")
        primary_login = {"primary_user": args.primary_user, "primary_password": password}
    return _serve(TransactionEngine(args.primary, bind=args.bind, primary_key=client_side.get("server_key"),
                                    client_keys=client_side.get("keys"), users=_users(args),
                                    **primary_login, **_server_security(args)))


def cmd_shell(args: argparse.Namespace) -> int:
    from workbench.zdb.shell import run_shell

    from pathlib import Path

    options: dict[str, Any] = {"read_your_writes": args.read_your_writes, **_client_security(args)}
    if args.user:
        options["user"] = args.user
        options["password"] = Path(args.password_file).read_text().strip() if args.password_file else ""
    return run_shell(args.write_uri, args.read_uri, **options)


def cmd_keygen(args: argparse.Namespace) -> int:
    from workbench.zdb.transport import CurveKeys

    public, secret = CurveKeys.generate().save(args.directory, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0
