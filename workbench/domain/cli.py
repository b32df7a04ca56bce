"""``workbench domain agent``: runs an agent or a broker built from flags."""

from __future__ import annotations

import argparse
import logging
import os

from workbench.credentials import warn_secret_on_command_line
from workbench.domain.protocol import DEFAULT_PORT
from workbench.servers import serve_until_signalled

#: where `agent` reads the domain password when --domain-password is not given: a command line is
#: visible to every user of the host (`ps`), a process's environment only to its owner
DOMAIN_PASSWORD_VARIABLE = "WORKBENCH_DOMAIN_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="domain_command", metavar="COMMAND")
    agent = commands.add_parser("agent", help="run an agent (a broker with --broker) on this host")
    agent.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"management port (default {DEFAULT_PORT})")
    agent.add_argument("--state-dir", required=True, help="where the agent keeps its TLS identity, logs and archives")
    agent.add_argument("--domain-user", default="domain", help="the domain's management user (default: domain)")
    agent.add_argument("--domain-password", help="the domain's management password (default: "
                                                 f"${DOMAIN_PASSWORD_VARIABLE}, which ps does not show)")
    agent.add_argument("--broker", action="store_true", help="also act as a broker")
    agent.add_argument("--peer", help="HOST:PORT of a broker to join (with --broker: a broker to replicate with)")
    agent.add_argument("--hostname", default="localhost", help="the name other peers and clients use for this host")
    agent.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    agent.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE", help="a host tag (repeatable)")
    agent.set_defaults(func=cmd_agent)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def cmd_agent(args: argparse.Namespace) -> int:
    from workbench.domain.agent import Agent
    from workbench.errors import ConfigurationError

    password = args.domain_password or os.environ.get(DOMAIN_PASSWORD_VARIABLE)
    if not password:
        raise ConfigurationError(f"the domain password is needed: --domain-password or ${DOMAIN_PASSWORD_VARIABLE}")
    if args.domain_password:
        warn_secret_on_command_line("--domain-password", DOMAIN_PASSWORD_VARIABLE)
    tags = {}
    for tag in args.tag:
        name, sep, value = tag.partition("=")
        if not sep:
            raise ConfigurationError("tags are NAME=VALUE", tag=tag)
        tags[name] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    agent = Agent(port=args.port, state_dir=args.state_dir, domain_user=args.domain_user,
                  domain_password=password, broker=args.broker, peer=args.peer,
                  hostname=args.hostname, host=args.bind, tags=tags)
    # stop() stops its database processes too
    serve_until_signalled(agent, lambda: print(f"{'broker' if args.broker else 'agent'} {agent.address} running",
                                               flush=True))
    return 0
