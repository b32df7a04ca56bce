"""domain: agents and brokers on each host, and the ``Domain`` client that manages zdb processes."""
