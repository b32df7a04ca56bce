"""Typed domain requests: the XML each writes is the wire's, byte for byte, and reads back as the same request."""

from __future__ import annotations

import pytest

from workbench.domain.model import DescriptionRecord, ProcessRecord
from workbench.domain.protocol import Message
from workbench.domain.requests import (
    AUTO,
    REQUEST_TYPES,
    CreateDescription,
    DeleteDescription,
    QuiesceDatabase,
    QuiesceProcess,
    StartDescription,
    StartProcess,
    StopDescription,
    StopProcess,
    UnquiesceDatabase,
    UpdateDescription,
    ok_reply,
    parse_request,
)
from workbench.errors import DomainError

DESCRIPTION = DescriptionRecord(name="teas", template="Multi Host", variables={"TE_COUNT": "2"},
                                dba_user="dba", dba_password="secret")

# Each request and the XML clients have always sent for it (request id 7).
WIRE = [
    (StartProcess("localhost:48004", "teas", "SM", archive="/tmp/teas", initialize=False),
     b'<Request Id="7" Type="StartProcess" Peer="localhost:48004" Database="teas" ProcessType="SM" '
     b'Archive="/tmp/teas" Initialize="false" />'),
    (StartProcess("localhost:48004", "teas", "TE", options=(("--dba-user", "d<&>"), ("--dba-password", "p"))),
     b'<Request Id="7" Type="StartProcess" Peer="localhost:48004" Database="teas" ProcessType="TE">'
     b'<Option Name="--dba-user" Value="d&lt;&amp;&gt;" /><Option Name="--dba-password" Value="p" /></Request>'),
    (StopProcess("localhost:48004/42", kill=True),
     b'<Request Id="7" Type="StopProcess" Process="localhost:48004/42" Kill="true" />'),
    (QuiesceDatabase("teas"), b'<Request Id="7" Type="QuiesceDatabase" Database="teas" />'),
    (UnquiesceDatabase("teas"), b'<Request Id="7" Type="UnquiesceDatabase" Database="teas" />'),
    (UpdateDescription("teas", variables={"TE_COUNT": "3"}),
     b'<Request Id="7" Type="UpdateDescription" Name="teas" Variables="replace">'
     b'<Variable Name="TE_COUNT" Value="3" /></Request>'),
    (UpdateDescription("teas", template="Single Host"),
     b'<Request Id="7" Type="UpdateDescription" Name="teas" Template="Single Host" />'),
    (DeleteDescription("teas"), b'<Request Id="7" Type="DeleteDescription" Name="teas" />'),
    (StartDescription("teas"), b'<Request Id="7" Type="StartDescription" Name="teas" />'),
    (StopDescription("teas"), b'<Request Id="7" Type="StopDescription" Name="teas" />'),
    (CreateDescription(DESCRIPTION),
     b'<Request Id="7" Type="CreateDescription">' + DESCRIPTION.to_message(secrets=True).to_xml() + b'</Request>'),
]


@pytest.mark.parametrize("request_, xml", WIRE, ids=[type(r).__name__ for r, _ in WIRE])
def test_each_request_writes_the_wire_form_and_reads_back_as_itself(request_, xml):
    message = request_.to_message("7")
    assert message.to_xml() == xml
    assert parse_request(Message.from_xml(xml)) == request_


def test_the_commands_a_broker_sends_its_agents_keep_their_form():
    # No Id of their own: the command channel numbers them.
    assert StopProcess("p/1").to_message().to_xml() == b'<Request Type="StopProcess" Process="p/1" />'
    assert QuiesceProcess("p/1", True).to_message().to_xml() == \
        b'<Request Type="Quiesce" Process="p/1" Quiesced="true" />'
    standby = StartProcess("p", "teas", "SM", standby=True).following("tcp://127.0.0.1:5000")
    assert standby.to_message().to_xml() == \
        b'<Request Type="StartProcess" Peer="p" Database="teas" ProcessType="SM" Standby="true" ' \
        b'Primary="tcp://127.0.0.1:5000" />'
    auto = parse_request(StartProcess("p", "teas", "SM", initialize=AUTO).to_message())
    assert auto.initialize == AUTO and auto.standby is False and auto.primary is None


def test_every_request_type_is_registered_once_by_its_wire_name():
    assert set(REQUEST_TYPES) == {"StartProcess", "StopProcess", "Quiesce", "QuiesceDatabase", "UnquiesceDatabase",
                                  "CreateDescription", "UpdateDescription", "DeleteDescription",
                                  "StartDescription", "StopDescription"}
    assert all(cls.TYPE == name for name, cls in REQUEST_TYPES.items())


def test_replies_parse_into_what_the_request_yields():
    record = ProcessRecord(id="p/1", peer="p", database="teas", type="SM", hostname="localhost", port=5000, pid=1)
    assert StartProcess("p", "teas", "SM").parse_reply(ok_reply(record.to_message())) == record
    assert StartDescription("teas").parse_reply(ok_reply(DESCRIPTION.to_message())).name == "teas"
    assert StopProcess("p/1").parse_reply(ok_reply()) is None


def test_an_unknown_request_type_is_a_domain_error_naming_it():
    with pytest.raises(DomainError, match="unknown request") as refused:
        parse_request(Message.make("Request", Id="1", Type="Nonsense"))
    assert refused.value.fields == {"type": "Nonsense"}
