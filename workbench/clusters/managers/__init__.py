"""Datastore managers: MySQL/MariaDB, Redis and PostgreSQL, all on the BaseManager interface."""

from workbench.clusters.managers.base import BaseManager

__all__ = ["BaseManager"]
