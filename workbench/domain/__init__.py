"""domain: agents and brokers on each host, and the ``Domain`` client that manages zdb processes.

::

    from workbench.domain import Domain
    d = Domain('localhost:48004', 'domain', 'bird', listener)
"""

from workbench.domain.agent import DEFAULT_PORT, Agent
from workbench.domain.client import Database, Domain, Peer, Process

__all__ = ["DEFAULT_PORT", "Agent", "Database", "Domain", "Peer", "Process"]
