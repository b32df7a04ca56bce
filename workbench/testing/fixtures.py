"""pytest fixtures for real services (ZooKeeper, sshd, MariaDB, PostgreSQL, Redis) on loopback."""
