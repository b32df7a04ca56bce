"""The web server's command-line options, for the commands that start one (``workbench inventory serve``).

::

    parser = argparse.ArgumentParser()
    add_web_arguments(parser)                   # --web-address, --web-modules, --web-cert, ...
    args = parser.parse_args()
    server = web_server_from_arguments(args, inventory, port=args.web_port, apply=apply).start()

HTTPS is on when ``--web-cert`` is given; it then needs ``--web-key`` and ``--web-ca`` (the CA of
client certificates) and takes ``--web-users`` (a YAML file mapping certificate DNs to users and
roles). ``--web-modules`` adds directories of web modules; ``--web-modules-config`` a YAML file
of module name -> parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import ConfigurationError
from workbench.inventory.web.auth import TLSConfig, UserMap
from workbench.inventory.web.server import WebServer
from workbench.inventory.web.writing import ApplyChanges


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the web server's options (the port option stays with the command)."""
    group = parser.add_argument_group("web server")
    group.add_argument("--web-address", default="127.0.0.1", help="address the web port binds (default 127.0.0.1)")
    group.add_argument("--web-modules", action="append", default=[], metavar="DIR",
                       help="a directory of web modules (repeatable)")
    group.add_argument("--web-modules-config", metavar="FILE", help="YAML: module name -> its parameters")
    group.add_argument("--web-cert", metavar="PEM", help="server certificate: serve HTTPS")
    group.add_argument("--web-key", metavar="PEM", help="the server certificate's private key")
    group.add_argument("--web-ca", metavar="PEM", help="CA that signs client certificates")
    group.add_argument("--web-users", metavar="FILE", help="YAML: certificate DN -> {user, roles}")


def tls_from_arguments(args: argparse.Namespace) -> TLSConfig | None:
    """The ``TLSConfig`` the options describe, or None for plain HTTP."""
    if not args.web_cert:
        if args.web_key or args.web_ca or args.web_users:
            raise ConfigurationError("--web-key, --web-ca and --web-users need --web-cert (HTTPS)")
        return None
    if not (args.web_key and args.web_ca):
        raise ConfigurationError("HTTPS needs --web-key and --web-ca besides --web-cert")
    users = UserMap.from_file(args.web_users) if args.web_users else UserMap()
    return TLSConfig(args.web_cert, args.web_key, args.web_ca, users)


def modules_config_from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    if not args.web_modules_config:
        return {}
    try:
        config = yaml.safe_load(Path(args.web_modules_config).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read the web modules config: {exc}", path=args.web_modules_config) \
            from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise ConfigurationError("the web modules config maps module names to parameter dicts",
                                 path=args.web_modules_config)
    return config


def web_server_from_arguments(args: argparse.Namespace, inventory: Any, port: int,
                              apply: ApplyChanges | None = None) -> WebServer:
    """A (not yet started) ``WebServer`` built from the options."""
    return WebServer(inventory, port=port, address=args.web_address, module_dirs=args.web_modules,
                     tls=tls_from_arguments(args), modules_config=modules_config_from_arguments(args), apply=apply)


__all__ = ["add_web_arguments", "modules_config_from_arguments", "tls_from_arguments", "web_server_from_arguments"]
