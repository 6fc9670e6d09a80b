"""Server-Timing: the header's shape, `auth` first, and durations summed per metric."""

from __future__ import annotations

import re

import pytest

from servers.timing import ServerTiming

METRIC = re.compile(r"^[a-z]+;dur=\d+\.\d{3}$")


def parse(header: str) -> list[tuple[str, str]]:
    parts = header.split(", ")
    assert all(METRIC.match(p) for p in parts), header
    return [tuple(p.split(";dur=")) for p in parts]  # type: ignore[misc]


def test_an_untimed_request_still_reports_auth() -> None:
    assert ServerTiming().header() == "auth;dur=0.000"


def test_durations_are_milliseconds_with_three_decimals() -> None:
    timing = ServerTiming()
    timing.add("auth", 0.25)
    timing.add("store", 0.0015)
    assert timing.header() == "auth;dur=250.000, store;dur=1.500"


def test_auth_comes_first_and_the_rest_in_the_order_they_were_first_timed() -> None:
    timing = ServerTiming()
    timing.add("pw", 0.003)
    timing.add("issue", 0.001)
    timing.add("store", 0.002)
    timing.add("auth", 0.004)
    assert [name for name, _ in parse(timing.header())] == ["auth", "pw", "issue", "store"]


def test_auth_is_reported_as_zero_when_only_other_metrics_were_timed() -> None:
    timing = ServerTiming()
    timing.add("store", 0.002)
    assert timing.header() == "auth;dur=0.000, store;dur=2.000"


def test_repeated_metrics_are_summed_not_repeated() -> None:
    timing = ServerTiming()
    timing.add("store", 0.001)
    timing.add("auth", 0.001)
    timing.add("store", 0.002)
    timing.add("store", 0.0005)
    assert timing.header() == "auth;dur=1.000, store;dur=3.500"


def test_measure_adds_the_block_to_its_metric() -> None:
    timing = ServerTiming()
    with timing.measure("store"):
        pass
    timing.add("store", 1.0)
    (_, auth), (name, store) = parse(timing.header())
    assert (auth, name) == ("0.000", "store")
    assert float(store) >= 1000.0


def test_measure_records_a_block_that_raised() -> None:
    timing = ServerTiming()
    with pytest.raises(ValueError), timing.measure("pw"):
        raise ValueError("verification failed")
    assert [name for name, _ in parse(timing.header())] == ["auth", "pw"]


def test_nested_measures_accumulate_into_each_metric() -> None:
    timing = ServerTiming()
    with timing.measure("auth"), timing.measure("store"):
        pass
    with timing.measure("auth"):
        pass
    assert [name for name, _ in parse(timing.header())] == ["auth", "store"]


def test_long_durations_keep_full_precision() -> None:
    timing = ServerTiming()
    timing.add("auth", 12.3456789)
    assert timing.header() == "auth;dur=12345.679"
