"""Fixtures for domain tests: a ``Domain`` session with the conftest ``broker``, closed after."""

from __future__ import annotations

import pytest


@pytest.fixture
def domain(broker):
    """A management session (user domain, password bird) with the in-process broker."""
    from workbench.domain import Domain

    session = Domain(broker.address, "domain", "bird")
    yield session
    session.disconnect()
