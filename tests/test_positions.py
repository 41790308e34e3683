"""The new headers' parsers and the idempotency window, without a broker."""

from __future__ import annotations

import pytest

from kafka_crud.errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError, ValidationError
from kafka_crud.idempotency import (
    IdempotencyIndex,
    Outcome,
    outcome_from_headers,
    parse_idempotency_key,
    record_headers,
)
from kafka_crud.positions import (
    format_positions,
    parse_etags,
    parse_min_positions,
    parse_prefer_wait,
    reached,
    users_etag,
)
from kafka_crud.records import Position


def positions(value: str) -> dict[int, int]:
    return parse_min_positions(value, topic="user", partitions=3)


def test_min_position_forms() -> None:
    assert positions("2-5") == {2: 5}
    assert positions('"2-5"') == {2: 5}
    assert positions("user:2-5") == {2: 5}
    assert positions(' 0-12 , "2-5",, 2-3 ') == {0: 12, 2: 5}
    assert format_positions({2: 5, 0: 12}) == "0-12,2-5"
    assert positions(format_positions({0: 1, 1: 2, 2: 3})) == {0: 1, 1: 2, 2: 3}


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty"), (" , ", "empty"), ("2", "not a position"), ("2-", "not a position"), ("-5", "not a position"),
    ("2-5x", "not a position"), ('"2-5', "not a position"), ("W/\"2-5\"", "not a position"),
    ("2 - 5", "not a position"), ("٢-٥", "not a position"), ("+2-5", "not a position"),
    ("3-0", "no partition 3"), ("4294967296-0", "out of range"), ("0-99999999999999999999", "not a position"),
    ("other:2-5", "topic 'other'"), (",".join(["0-1"] * 1001), "at most 1000"),
])
def test_bad_min_positions_are_400s_that_say_why(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        positions(value)


def test_reached_means_the_record_at_the_offset_is_applied() -> None:
    applied = {0: 5, 2: 1}  # next offsets to apply
    assert reached({0: 4}, applied)
    assert not reached({0: 5}, applied)
    assert reached({2: 0}, applied)
    assert not reached({1: 0}, applied)
    assert reached({}, applied)


def test_users_etag() -> None:
    assert users_etag({}) == '"none"'
    assert users_etag({2: 8, 0: 11}) == '"0-11.2-8"'


def test_prefer_wait() -> None:
    assert parse_prefer_wait([]) is None
    assert parse_prefer_wait(["respond-async"]) is None
    assert parse_prefer_wait(["wait=5"]) == 5
    assert parse_prefer_wait(["respond-async, WAIT = 7 ; x=1"]) == 7
    assert parse_prefer_wait(['wait="3"']) == 3
    assert parse_prefer_wait(["wait=0"]) == 0
    assert parse_prefer_wait(["wait=30"]) == 30
    assert parse_prefer_wait(["wait=2, wait=40"]) == 2  # RFC 7240: the first one counts
    assert parse_prefer_wait(['x="a,wait=40"', "wait=4"]) == 4  # a comma inside quotes separates nothing


@pytest.mark.parametrize("value", ["wait=31", "wait=-1", "wait=1.5", "wait=", "wait", "wait=abc", "wait=٣",
                                   "wait=99999999999999999999"])
def test_bad_prefer_wait_is_a_400(value: str) -> None:
    with pytest.raises(ValidationError, match="wait"):
        parse_prefer_wait([value])


def test_if_none_match() -> None:
    assert parse_etags("*") == frozenset({"*"})
    assert parse_etags('"2-5"') == frozenset({'"2-5"'})
    assert parse_etags('W/"2-5", "0-1"') == frozenset({'"2-5"', '"0-1"'})
    for bad in ["", "2-5", '"2-5', '"2-5" x', "W/2-5"]:
        with pytest.raises(ValidationError, match="If-None-Match"):
            parse_etags(bad)


def test_idempotency_keys() -> None:
    assert parse_idempotency_key([]) is None
    assert parse_idempotency_key(['"8e03978e-40d5"']) == "8e03978e-40d5"
    assert parse_idempotency_key(["plain-token_1"]) == "plain-token_1"
    assert parse_idempotency_key(['"with space and \\"quote\\""']) == 'with space and "quote"'
    assert parse_idempotency_key(["k" * 255]) == "k" * 255
    for bad, message in [('""', "empty"), ("", "empty"), ("k" * 256, "at most 255"), ('"' + "k" * 300 + '"', "at most"),
                         ('"unterminated', "quoted"), ("two words", "token"), ('"tab\t"', "quoted"),
                         ('"bad \\x escape"', "quoted"), ("caf\xe9", "token")]:
        with pytest.raises(ValidationError, match=message):
            parse_idempotency_key([bad])
    with pytest.raises(ValidationError, match="once"):
        parse_idempotency_key(["a", "b"])


def test_outcomes_travel_in_record_headers() -> None:
    headers = [(n, v.encode() if isinstance(v, str) else v) for n, v in record_headers("k1", "f" * 64, 201)]
    found = outcome_from_headers([("other", b"x"), *headers], Position("user", 2, 7), 1_700_000_000_000)
    assert found is not None
    key, outcome = found
    assert key == "k1"
    assert outcome == Outcome("f" * 64, 201, Position("user", 2, 7), 1_700_000_000.0)
    assert outcome_from_headers([("other", b"x")], Position("user", 2, 7), 0) is None


def test_the_window_is_bounded_in_time_and_count() -> None:
    now = [1000.0]
    index = IdempotencyIndex(window=60, max_keys=3, clock=lambda: now[0])
    for i in range(5):
        index.remember(f"k{i}", Outcome("f", 201, Position("user", 0, i), now[0]))
    assert len(index) == 3
    assert index.lookup("k0") is None
    assert index.lookup("k4") is not None
    index.remember("old", Outcome("f", 201, Position("user", 0, 9), now[0] - 61))
    assert index.lookup("old") is None
    now[0] += 61
    assert index.lookup("k4") is None


def test_the_first_record_of_a_key_wins_and_a_moved_partition_is_forgotten() -> None:
    index = IdempotencyIndex(clock=lambda: 0.0)
    index.remember("k", Outcome("f1", 201, Position("user", 1, 3), 0.0))
    index.remember("k", Outcome("f2", 200, Position("user", 1, 9), 0.0))
    assert index.check("k", "f1") == Outcome("f1", 201, Position("user", 1, 3), 0.0)
    with pytest.raises(IdempotencyKeyReusedError):
        index.check("k", "f2")
    index.drop_partition(1)
    assert index.check("k", "f2") is None


def test_a_key_in_flight_gets_409_or_422() -> None:
    index = IdempotencyIndex()
    with index.in_flight("k", "f1"):
        with pytest.raises(IdempotencyKeyInUseError):
            index.in_flight("k", "f1").__enter__()
        with pytest.raises(IdempotencyKeyReusedError):
            index.in_flight("k", "f2").__enter__()
    with index.in_flight("k", "f2"):
        pass
