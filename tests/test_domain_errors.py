"""Domain errors cross the wire in the one envelope: a broker's error is the declared class, fields and all."""

from __future__ import annotations

import pytest

from workbench.domain import DescriptionError, Domain, NoSuchProcessError, ProcessStartError
from workbench.domain.errors import DOMAIN_ERRORS, ProtocolError
from workbench.domain.protocol import Message
from workbench.domain.requests import StopProcess, error_reply, reply_error
from workbench.domain.transport import connect
from workbench.errors import AuthenticationError, DomainError


@pytest.fixture
def session(broker):
    """A raw logged-in connection to the broker, for requests the ``Domain`` API would not send."""
    conn = connect(broker.address)
    assert conn.request(Message.make("Connect", Role="client", User="domain", Password="bird")).tag == "Connected"
    yield conn
    conn.close()


def test_stopping_an_unknown_process_reaches_the_wire_as_the_envelope(session):
    request = StopProcess("localhost:1/999")
    reply = session.request(request.to_message("1"))
    assert (reply.get("Status"), reply.get("Error"), reply.get("Message")) == ("error", "NoSuchProcessError",
                                                                               "no such process")
    assert reply.get("Code") is None  # the kind travels once, in Error
    assert [(f.get("Name"), f.get("Value")) for f in reply.find("Field")] == [("process", '"localhost:1/999"')]
    with pytest.raises(NoSuchProcessError) as caught:
        request.parse_reply(reply)
    assert caught.value.process == "localhost:1/999" and caught.value.fields == {"process": "localhost:1/999"}


def test_an_unknown_request_type_comes_back_as_a_domain_error_with_its_type(session):
    reply = session.request(Message.make("Request", Id="2", Type="Nonsense"))
    error = reply_error(reply)
    assert type(error) is DomainError and error.fields == {"type": "Nonsense"} and reply.get("Id") == "2"


def test_a_process_that_left_raises_no_such_process_through_the_client(broker, tmp_path):
    with Domain(broker.address, "domain", "bird") as d:
        process = d.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        process.kill()
        assert process.wait_for_left(30)
        with pytest.raises(NoSuchProcessError) as caught:
            process.shutdown()
        assert caught.value.fields == {"process": process.id}


def test_an_agents_refusal_reaches_the_client_as_its_declared_class_with_fields(broker, tmp_path):
    missing = str(tmp_path / "nowhere")
    with Domain(broker.address, "domain", "bird") as d:
        with pytest.raises(ProcessStartError, match="archive does not exist") as caught:
            d.entry_peer.start_storage_manager("teas", missing, False)
        assert caught.value.archive == missing
        with pytest.raises(ProcessStartError, match="not allowed") as caught:
            d.entry_peer.start_storage_manager("teas", missing, True, options=[("--bind", "x")])
        assert caught.value.fields == {"option": "--bind"}


def test_a_brokers_description_errors_keep_their_typed_fields(broker):
    with Domain(broker.address, "domain", "bird") as d:
        d.create_description("teas", "Multi Host", {"TE_COUNT": 2})
        with pytest.raises(DescriptionError) as unknown:
            d.update_description("teas", variables={"COLOR": "green"})
        assert unknown.value.unknown == ["COLOR"] and "TE_COUNT" in unknown.value.allowed
        with pytest.raises(DescriptionError) as short:
            d.start_description("teas")
        assert (short.value.needed, short.value.available) == (2, 1)  # numbers stay numbers


def test_an_unknown_kind_falls_back_to_domain_error_naming_the_kind():
    reply = Message.make("Response", Message.make("Field", Name="shard", Value="3"), Id="1", Status="error",
                         Message="resharding", Error="ReshardingError")
    with pytest.raises(DomainError) as caught:
        StopProcess("p/1").parse_reply(reply)
    assert type(caught.value) is DomainError
    assert caught.value.fields == {"shard": 3, "kind": "ReshardingError"} and caught.value.message == "resharding"


def test_every_declared_class_round_trips_through_the_xml_envelope():
    for kind, cls in DOMAIN_ERRORS.classes.items():
        error = reply_error(Message.from_xml(error_reply(cls("it failed", peer="p:1", tries=[1, 2])).to_xml()))
        assert type(error) is cls, kind
        assert (error.message, error.fields) == ("it failed", {"peer": "p:1", "tries": [1, 2]})
    assert {AuthenticationError, ProtocolError, DomainError} <= set(DOMAIN_ERRORS.classes.values())


def test_a_field_json_cannot_carry_travels_as_its_repr_and_a_non_json_value_as_text():
    error = reply_error(error_reply(DomainError("odd", where=object)))
    assert error.fields["where"] == repr(object)
    written = Message.make("Response", Message.make("Field", Name="note", Value="plain words"), Status="error",
                           Error="DomainError", Message="hand-written")
    assert reply_error(written).fields == {"note": "plain words"}


def test_a_refused_login_carries_the_envelope_and_raises_the_declared_class(broker):
    conn = connect(broker.address)
    try:
        reply = conn.request(Message.make("Connect", Role="client", User="domain", Password="crow"))
    finally:
        conn.close()
    assert (reply.tag, reply.get("Error"), reply.get("Code")) == ("Error", "AuthenticationError", "authentication")
    with pytest.raises(AuthenticationError) as caught:
        Domain(broker.address, "domain", "crow", timeout=5.0)
    assert type(caught.value) is AuthenticationError
    assert caught.value.fields == {"user": "domain", "broker": broker.address}


def test_a_throttled_login_is_login_throttled_with_its_wait(broker):
    from workbench.domain import LoginThrottled

    refusals = []
    for index in range(8):
        with pytest.raises(AuthenticationError) as caught:
            Domain(broker.address, "domain", f"wrong-{index}", timeout=5.0)
        refusals.append(caught.value)
    throttled = [error for error in refusals if isinstance(error, LoginThrottled)]
    assert throttled, [repr(error) for error in refusals]
    assert all(0 < error.retry_after <= 10 and error.user == "domain" for error in throttled)
    assert not isinstance(refusals[0], LoginThrottled)


def test_locating_a_database_without_a_te_raises_no_such_database(broker):
    from workbench.domain import NoSuchDatabaseError, locate_database

    with pytest.raises(NoSuchDatabaseError) as caught:
        locate_database(broker.address, "absent", timeout=5.0)
    assert caught.value.database == "absent" and caught.value.broker == broker.address
