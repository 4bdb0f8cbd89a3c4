"""Protocol v1 core: parsing, validation, encoding, close-code table. No sockets, no trio."""

import json
import subprocess
import sys

import pytest

from trioconn import CLOSE_CODES, CloseAction, ProtocolError
from trioconn._core.protocol import (
    MAX_DATA_DEPTH,
    MAX_FRAME_DEPTH,
    Batch,
    End,
    Error,
    Event,
    Join,
    Leave,
    Ping,
    Pong,
    PresenceMember,
    Publish,
    Published,
    Reply,
    Request,
    Reset,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    close_action,
    encode_batch,
    encode_event,
    json_depth_exceeds,
    parse_client_frame,
    parse_server_frames,
    validate_topic,
)


def test_protocol_module_does_not_import_trio():
    # trioconn/__init__ imports the hub (and trio); load the protocol module on its own.
    code = (
        "import importlib.util, sys, types; pkg = types.ModuleType('trioconn'); pkg.__path__ = ['trioconn'];"
        "sys.modules['trioconn'] = pkg; import trioconn._core.protocol; print('trio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "frame",
    [
        Subscribe("logs/a"),
        Subscribe("logs/a", ref="r1", epoch="e1", offset=5),
        Subscribe("logs/a", ref=7, last=10),
        Unsubscribe("t", ref=2),
        Pong(3),
        Publish("t", {"a": [1, 2]}, ref="x"),
        Request("jobs/start", {"n": 3}, ref=9),
        Request("jobs/start", None, ref="r"),
    ],
)
def test_client_frames_round_trip(frame):
    assert parse_client_frame(frame.to_json()) == frame


@pytest.mark.parametrize(
    "frame",
    [
        Welcome("s1", 15.0, 45.0, 65536),
        Ping(4, rtt=0.25),
        Ping(5),
        Subscribed("t", "e", 3, "state", {"p": 1}, True, 0, False, "r"),
        Subscribed("t", "e", 0, None),
        Reset("t", "e", 9, "stream", replayed=2),
        Event("t", 1, [1, "x"]),
        End("t", 9),
        Unsubscribed("t", 1),
        Published("t", 4, "r"),
        Error("forbidden", "no", "r", "t"),
        Error("no-handler", "nobody answers", 7),
        Reply(7, {"job": "j1"}),
        Reply("r", None),
        Join("room", {"name": "ann"}, "s1", 1700000000.5),
        Join("room", None, "s2", 0.0),
        Leave("room", {"name": "ann"}, "s1"),
        Subscribed("t", "e", 3, "stream", presence=(PresenceMember({"n": 1}, "s1", 1.5),)),
        Subscribed("t", "e", 3, "stream", presence=()),
        Reset("t", "e", 3, "stream", presence=(PresenceMember(None, "s9", 2.0),)),
    ],
)
def test_server_frames_round_trip(frame):
    assert parse_server_frames(frame.to_json()) == [frame]


def test_batch_unpacks_in_order():
    frames = (Event("a", 1, 1), Ping(1), Event("a", 2, 2), End("a", 2))
    assert parse_server_frames(Batch(frames).to_json()) == list(frames)
    assert json.loads(encode_batch([encode_event("t", 1, None)]))["frames"][0]["offset"] == 1


def test_unknown_fields_are_ignored():
    frame = parse_client_frame('{"type":"subscribe","topic":"t","future":{"x":1}}')
    assert frame == Subscribe("t")


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("not json", "invalid-json", "not valid JSON"),
        ("[1,2]", "not-an-object", "JSON object"),
        ('"x"', "not-an-object", "JSON object"),
        ('{"type":"nope"}', "unknown-type", "'nope'"),
        ('{"topic":"t"}', "unknown-type", "None"),
        ('{"type":"subscribe"}', "invalid-field", "'topic'"),
        ('{"type":"subscribe","topic":""}', "invalid-field", "empty"),
        ('{"type":"subscribe","topic":5}', "invalid-field", "'topic'"),
        ('{"type":"subscribe","topic":"a\\u0001"}', "invalid-field", "control"),
        ('{"type":"subscribe","topic":"t","resume":1}', "invalid-field", "'resume'"),
        ('{"type":"subscribe","topic":"t","resume":{"epoch":"e","offset":-1}}', "invalid-field", "'offset'"),
        ('{"type":"subscribe","topic":"t","last":true}', "invalid-field", "'last'"),
        ('{"type":"subscribe","topic":"t","ref":[1]}', "invalid-field", "'ref'"),
        ('{"type":"publish","topic":"t"}', "invalid-field", "'data'"),
        ('{"type":"pong"}', "invalid-field", "'id'"),
        ('{"type":"request","topic":"t","data":1}', "invalid-field", "'ref'"),
        ('{"type":"request","data":1,"ref":1}', "invalid-field", "'topic'"),
        ('{"type":"request","topic":"t","ref":true}', "invalid-field", "'ref'"),
        ('{"type":"pong","id":NaN}', "invalid-json", "NaN"),
    ],
)
def test_malformed_client_frames_get_a_named_error(text, code, words):
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text)
    assert info.value.code == code
    assert words in info.value.message


def test_binary_frames_are_refused():
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(b'{"type":"pong","id":1}')
    assert info.value.code == "binary-frame"


def test_error_carries_the_ref_of_the_bad_frame():
    with pytest.raises(ProtocolError) as info:
        parse_client_frame('{"type":"subscribe","ref":"abc"}')
    assert info.value.ref == "abc"


def test_topic_validation_messages():
    assert validate_topic("jobs/42") == "jobs/42"
    with pytest.raises(ValueError, match="longer than 256"):
        validate_topic("x" * 257)
    with pytest.raises(ValueError, match="must be a str"):
        validate_topic(None)


def test_non_json_data_is_a_type_error():
    with pytest.raises(TypeError, match="JSON"):
        encode_event("t", 1, object())
    with pytest.raises(TypeError, match="JSON"):
        encode_event("t", 1, float("nan"))


def test_welcome_of_another_version_is_refused():
    text = Welcome("s", 1.0, 3.0, 10).to_json().replace('"version":1', '"version":2')
    with pytest.raises(ProtocolError, match="version"):
        parse_server_frames(text)


def test_welcome_inside_a_batch_is_refused():
    with pytest.raises(ProtocolError):
        parse_server_frames(encode_batch([Welcome("s", 1.0, 3.0, 10).to_json()]))


def test_close_code_table():
    assert close_action(1000) is CloseAction.DONE
    for code in (1001, 1006, 1011, 1012, 1013, 4000, 4001):
        assert close_action(code) is CloseAction.RECONNECT, code
    for code in (1002, 1003, 1007, 1008, 1009, 4403):
        assert close_action(code) is CloseAction.FAIL, code
    assert close_action(4401) is CloseAction.REAUTH
    assert close_action(1014) is CloseAction.FAIL
    assert close_action(4999) is CloseAction.RECONNECT
    assert close_action(1001, {1001: CloseAction.DONE}) is CloseAction.DONE
    assert all(code == info.code for code, info in CLOSE_CODES.items())


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize(
    ("text", "limit", "deeper"),
    [
        (_nested(3), 3, False),
        (_nested(4), 3, True),
        ('{"a":[1,{"b":[]}],"c":{}}', 4, False),
        ('{"a":[1,{"b":[[]]}]}', 4, True),
        ('["[[[[", "{{{{", "\\"", "]]"]', 1, False),  # brackets inside strings do not count
        ("[" * 10, 3, False),  # unbalanced: left to the parser
        ("[[],[],[],[],[]]", 2, False),  # many brackets, shallow
    ],
)
def test_json_depth_is_measured_without_recursion(text, limit, deeper):
    assert json_depth_exceeds(text, limit) is deeper


@pytest.mark.parametrize("parse", [parse_client_frame, parse_server_frames])
@pytest.mark.parametrize("depth", [MAX_FRAME_DEPTH, 1000, 30_000])
def test_frames_nested_too_deep_are_invalid_json_not_a_recursion_error(parse, depth):
    text = '{"type":"publish","topic":"t","data":' + _nested(depth) + "}"
    with pytest.raises(ProtocolError) as info:
        parse(text)
    assert info.value.code == "invalid-json"
    assert f"nested more than {MAX_FRAME_DEPTH} levels" in info.value.message


def test_data_at_the_depth_limit_is_carried_and_one_more_level_is_refused():
    deepest = json.loads(_nested(MAX_DATA_DEPTH - 1, "[]"))
    frame = encode_event("t", 1, deepest)
    assert parse_server_frames(encode_batch([frame]))[0] == Event("t", 1, deepest)
    assert parse_client_frame(Publish("t", deepest).to_json()).data == deepest
    with pytest.raises(TypeError, match=f"nested more than {MAX_DATA_DEPTH} levels"):
        encode_event("t", 1, [deepest])


def test_data_nested_beyond_the_interpreter_limit_is_a_type_error():
    data: list = []
    for _ in range(5000):
        data = [data]
    with pytest.raises(TypeError, match="nested more than"):
        encode_event("t", 1, data)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1.5e400"])
def test_numbers_that_do_not_fit_a_float_are_an_invalid_field(number):
    with pytest.raises(ProtocolError) as info:
        parse_client_frame('{"type":"publish","topic":"t","data":' + number + "}")
    assert info.value.code == "invalid-field"
    assert "finite" in info.value.message


def test_a_request_without_data_asks_with_null():
    assert parse_client_frame('{"type":"request","topic":"t","ref":1}') == Request("t", None, 1)


def test_a_request_error_carries_its_ref():
    with pytest.raises(ProtocolError) as info:
        parse_client_frame('{"type":"request","topic":"","ref":"q1"}')
    assert info.value.ref == "q1"


def test_subscribed_without_presence_parses_as_none_and_is_encoded_without_it():
    frame = Subscribed("t", "e", 0, None)
    assert "presence" not in json.loads(frame.to_json())
    assert parse_server_frames(frame.to_json())[0].presence is None
    text = Subscribed("t", "e", 0, "state", presence=(PresenceMember(1, "s", 2.0),)).to_json(
        snapshot_json="5"
    )
    assert parse_server_frames(text)[0] == Subscribed(
        "t", "e", 0, "state", 5, True, presence=(PresenceMember(1, "s", 2.0),)
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"type":"reply","data":1}', "'ref'"),
        ('{"type":"join","topic":"t","info":1,"session":"s"}', "'since'"),
        ('{"type":"join","topic":"t","info":1,"session":"s","since":-1}', "'since'"),
        ('{"type":"join","topic":"t","info":1,"session":5,"since":1}', "'session'"),
        ('{"type":"leave","topic":"t","info":1}', "'session'"),
        ('{"type":"subscribed","topic":"t","epoch":"e","offset":0,"presence":{}}', "'presence'"),
        ('{"type":"subscribed","topic":"t","epoch":"e","offset":0,"presence":[1]}', "'presence'"),
        ('{"type":"subscribed","topic":"t","epoch":"e","offset":0,"presence":[{"session":"s"}]}', "'since'"),
    ],
)
def test_malformed_presence_and_reply_frames_are_refused(text, words):
    with pytest.raises(ProtocolError) as info:
        parse_server_frames(text)
    assert info.value.code == "invalid-field"
    assert words in info.value.message


def test_a_reply_too_deep_to_send_is_a_type_error():
    data: list = []
    for _ in range(MAX_DATA_DEPTH + 1):
        data = [data]
    with pytest.raises(TypeError, match="nested more than"):
        Reply(1, data).to_json()


def test_request_refused_checks_its_code_and_keeps_code_and_message():
    from trioconn import RequestRefused, TrioconnError

    refused = RequestRefused("not-found", "no such job")
    assert (refused.code, refused.message, str(refused)) == (
        "not-found",
        "no such job",
        "not-found: no such job",
    )
    assert isinstance(refused, TrioconnError)
    for bad in ("", "Not-Found", "a b", "x" * 65, "ünï"):
        with pytest.raises(ValueError, match="code must be 1-64 characters"):
            RequestRefused(bad)
    with pytest.raises(TypeError, match="code must be a str"):
        RequestRefused(404)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be a str"):
        RequestRefused("busy", None)  # type: ignore[arg-type]


def test_publications_lost_says_how_many():
    from trioconn import PublicationsLost

    assert PublicationsLost(3).count == 3
    assert "3 publication(s)" in str(PublicationsLost(3))
