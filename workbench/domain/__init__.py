"""domain: agents and brokers on each host, and the ``Domain`` client that manages zdb processes.

::

    from workbench.domain import Domain
    d = Domain('localhost:48004', 'domain', 'bird', listener)

Descriptions
------------
Instead of starting processes one by one, declare a database from a template and let the brokers
keep it running. ``d.templates`` lists the built-in templates (``Single Host``: 1 SM + 1 TE on one
peer; ``Minimally Redundant``: 2 SMs, the second a standby copy, + ``TE_COUNT`` (default 2) TEs,
each kind on distinct peers; ``Multi Host``: 1 SM + ``TE_COUNT`` TEs on distinct peers)::

    d.create_description('teas', 'Multi Host', {'TE_COUNT': 2}, dba_user='dba', dba_password='dba')
    d.start_description('teas', wait_seconds=60)     # status RUNNING
    d.get_description('teas').processes              # its SM and TEs
    d.stop_description('teas'); d.delete_description('teas')

A started description is kept true by a reconciler in the acting broker: a failed process is
started again on an available peer (an SM on the peer that owns its archive). Listeners hear
``description_changed(description)`` and ``reconciler_action(description, action, detail)``.
Descriptions are replicated to every broker and saved in each broker's state dir.
"""

from workbench.domain.agent import Agent
from workbench.domain.client import Database, Description, Domain, Peer, Process, locate_database
from workbench.domain.errors import (
    LoginBusy,
    LoginThrottled,
    NoSuchDatabaseError,
    NoSuchProcessError,
    ProcessStartError,
    ProtocolError,
)
from workbench.domain.keys import DatabaseKeys
from workbench.domain.protocol import DEFAULT_PORT
from workbench.domain.templates import TEMPLATES, DescriptionError, Template
from workbench.domain.transport import KnownBrokers
from workbench.zdb.locators import register_locator as _register_locator

# zdb:// URIs (workbench.zdb.connect) find their database through the domain's brokers.
_register_locator(locate_database)

__all__ = ["DEFAULT_PORT", "TEMPLATES", "Agent", "Database", "DatabaseKeys", "Description", "DescriptionError",
           "Domain", "KnownBrokers", "LoginBusy", "LoginThrottled", "NoSuchDatabaseError", "NoSuchProcessError", "Peer",
           "Process", "ProcessStartError", "ProtocolError", "Template", "locate_database"]
