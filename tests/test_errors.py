"""The error hierarchy: one root, a base per subsystem, structured fields that survive pickling."""

from __future__ import annotations

import pickle

import pytest

from workbench import errors
from workbench.errors import AuthenticationError, DomainError, ServiceError, WorkbenchError


def test_every_error_derives_from_the_root():
    exported = [getattr(errors, name) for name in errors.__all__]
    exceptions = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, BaseException)]
    assert len(exceptions) >= 10
    for error in exceptions:
        assert issubclass(error, WorkbenchError)
    # the rest is the machinery that carries them across wires, not errors
    assert {obj.__name__ for obj in exported if obj not in exceptions} == {"ErrorRegistry", "json_safe"}
    assert issubclass(AuthenticationError, DomainError)


def test_fields_are_attributes_and_part_of_the_message():
    error = ServiceError("mariadb did not start", service="mariadb", port=3307)
    assert error.service == "mariadb" and error.port == 3307
    assert error.fields == {"service": "mariadb", "port": 3307}
    assert str(error) == "mariadb did not start (service=mariadb, port=3307)"
    assert repr(error) == "ServiceError('mariadb did not start', service='mariadb', port=3307)"
    assert str(WorkbenchError("plain")) == "plain"


def test_fields_never_shadow_class_attributes():
    error = WorkbenchError("x", message="shadow?", args="no")
    assert error.message == "x"
    assert error.fields["args"] == "no"


def test_pickling_keeps_type_and_fields():
    error = AuthenticationError("wrong password", user="domain", broker="localhost:48004")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is AuthenticationError
    assert copy.fields == error.fields and copy.broker == "localhost:48004"
    with pytest.raises(DomainError, match="wrong password"):
        raise copy
