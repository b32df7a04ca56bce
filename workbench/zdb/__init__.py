"""zdb: a ZeroMQ document database of nested lists and dicts queried with Python syntax."""
