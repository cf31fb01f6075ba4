"""The daemon's request schemas: strict JSON types, sizes and ranges, unknown arguments refused."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muslin import daemon, protocol
from muslin.protocol import Invalid, parse_request


def test_every_operation_has_a_schema():
    assert set(protocol.SCHEMAS) == set(daemon.OPERATIONS)


@pytest.mark.parametrize("request_, message", [
    ({"op": "network.create", "args": {"name": "n", "ipv6": "false"}},
     "argument 'ipv6' of network.create must be a boolean (true or false), not a string"),
    ({"op": "container.remove", "args": {"name": "c", "force": "no"}},
     "argument 'force' of container.remove must be a boolean (true or false), not a string"),
    ({"op": "network.create", "args": {"name": 123}}, "argument 'name' of network.create must be a name, not an integer"),
    ({"op": "network.create", "args": {"name": "x" * 10_000_000}},
     "argument 'name' of network.create is too long (10000000 characters, at most 1024)"),
    ({"op": "network.create", "args": {"name": "n", "labels": {"k": "v" * 5000}}},
     "argument 'labels' of network.create['k'] is too long (5000 characters, at most 4096)"),
    ({"op": "container.started", "args": {"id": "c", "pid": True}},
     "argument 'pid' of container.started must be an integer, not a boolean"),
    ({"op": "container.started", "args": {"id": "c", "pid": -1}},
     "argument 'pid' of container.started must be between 1 and 2147483647, not -1"),
    ({"op": "container.started", "args": {"id": "c"}}, "container.started requires the argument 'pid'"),
    ({"op": "network.list", "args": {"verbose": True}},
     "unknown argument 'verbose' for network.list (it takes: no arguments)"),
    ({"op": "network.remove", "args": {"name": "n", "force": True}},
     "unknown argument 'force' for network.remove (it takes: name)"),
    ({"op": "nope"}, "unknown operation 'nope'"),
    ({"op": 7}, '"op" must be a string, not an integer'),
    ({"op": "ping", "args": [1]}, '"args" of ping must be an object, not an array'),
    ({"op": "ping", "extra": 1}, "unknown request field 'extra' (a request has \"op\" and \"args\")"),
    ([1, 2], "a request must be a JSON object, not an array"),
    ("ping", "a request must be a JSON object, not a string"),
    (None, "a request must be a JSON object, not null"),
])
def test_malformed_requests_are_refused_with_a_clear_message(request_, message):
    with pytest.raises(Invalid) as exc:
        parse_request(request_)
    assert str(exc.value) == message


def test_what_the_cli_sends_passes_unchanged():
    args = {"name": "n", "driver": "bridge", "subnets": ["10.1.0.0/16"], "gateways": [], "ip_ranges": [],
            "aux_addresses": {"host": "10.1.0.5"}, "ipv6": False, "internal": True,
            "options": {"parent": "eth0"}, "labels": {"a": ""}}
    assert parse_request({"op": "network.create", "args": args}) == ("network.create", args)
    assert parse_request({"op": "ping"}) == ("ping", {})
    assert parse_request({"op": "network.connect", "args": {"network": "n", "pid": 1, "container": None}}) == (
        "network.connect", {"network": "n", "pid": 1, "container": None})


def test_a_line_longer_than_the_limit_is_refused_without_reading_it_all():
    stream = io.BufferedReader(io.BytesIO(b"x" * (protocol.MAX_LINE * 3)))
    request, reply = daemon.read_request(stream)
    assert request is None and reply["error"]["message"].startswith("request too long")
    assert stream.tell() <= protocol.MAX_LINE


def test_non_json_and_deeply_nested_lines_get_an_error():
    for line in (b"{nope\n", b"[" * 100_000 + b"\n"):
        request, reply = daemon.read_request(io.BufferedReader(io.BytesIO(line)))
        assert request is None and reply == {"error": {"code": "invalid", "message": "request is not JSON"}}


class _NoEngine:
    def __getattr__(self, name):
        raise AssertionError(f"the engine was called ({name}) for a refused request")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(protocol.SCHEMAS)), data=st.data())
def test_random_arguments_are_either_valid_or_refused_before_the_engine(op, data):
    schema = protocol.SCHEMAS[op]
    names = st.sampled_from(sorted(schema)) if schema else st.text(max_size=8)
    args = data.draw(st.dictionaries(names | st.text(max_size=8), json_values, max_size=5))
    try:
        checked_op, checked = parse_request({"op": op, "args": args})
    except Invalid as exc:
        reply = daemon.handle(_NoEngine(), {"op": op, "args": args})
        assert reply == {"error": {"code": "invalid", "message": str(exc)}}
        return
    assert checked_op == op and set(checked) <= set(schema)
