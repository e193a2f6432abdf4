"""The late-penalty rules: a table of cases (time zones, DST, exactly on time, grace, floor,
cut-off, extensions) and the `[deadline]` table of assignment.toml."""

from __future__ import annotations

import tomllib
from datetime import datetime

import pytest

from grader.errors import SpecError
from grader.lateness import DeadlinePolicy, lateness, parse_deadline

NY = "America/New_York"


def policy(**overrides: object) -> DeadlinePolicy:
    data: dict[str, object] = {
        "due": "2026-03-07T23:59",  # the night before US daylight saving starts (Mar 8 2026)
        "timezone": NY,
        "grace_minutes": 10,
        "penalty": "per_day",
        "percent": 10,
        "floor": 50,
        "cutoff": "2026-03-12T23:59",
    }
    data.update(overrides)
    return parse_deadline({k: v for k, v in data.items() if v is not None}, "test")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


CASES = [
    # (name, policy overrides, submitted, units, penalty percent)
    ("exactly on the deadline", {}, "2026-03-07T23:59:00-05:00", 0, 0),
    ("one second early", {}, "2026-03-07T23:58:59-05:00", 0, 0),
    ("same instant in another zone", {}, "2026-03-08T05:59:00+01:00", 0, 0),
    ("same instant in UTC", {}, "2026-03-08T04:59:00+00:00", 0, 0),
    ("inside the grace period", {}, "2026-03-08T00:05:00-05:00", 0, 0),
    ("exactly at the end of grace", {}, "2026-03-08T00:09:00-05:00", 0, 0),
    ("one second past grace", {}, "2026-03-08T00:09:01-05:00", 1, 10),
    # DST starts 2026-03-08 02:00: the same wall-clock time next day is only 23 h later
    ("DST spring: next day same local time", {}, "2026-03-08T23:59:00-04:00", 1, 10),
    ("DST spring: 23.5 real hours, 2nd local day", {}, "2026-03-09T00:30:00-04:00", 2, 20),
    ("four days late", {}, "2026-03-11T12:00:00-04:00", 4, 40),
    ("five days: the floor keeps 50%", {}, "2026-03-12T23:00:00-04:00", 5, 50),
    ("floor caps the penalty", {"cutoff": None}, "2026-03-20T12:00:00-04:00", 13, 50),
    ("past the cut-off", {}, "2026-03-12T23:59:01-04:00", 0, 100),
    ("no grace", {"grace_minutes": 0}, "2026-03-08T00:00:01-05:00", 1, 10),
    ("per hour: 2h01 late", {"penalty": "per_hour", "percent": 5}, "2026-03-08T02:00:00-05:00", 3, 15),
    # 2026-03-08 02:00 EST does not exist; this is 03:00 EDT, still 2h01 real time
    ("per hour across DST", {"penalty": "per_hour", "percent": 5}, "2026-03-08T03:00:00-04:00", 3, 15),
    ("no penalty before the cut-off", {"penalty": "none"}, "2026-03-10T12:00:00-04:00", 0, 0),
    ("no penalty, zero after the cut-off", {"penalty": "none"}, "2026-03-13T00:00:00-04:00", 0, 100),
    # DST ends 2026-11-01 02:00: the next day's same local time is 25 h later, still one day
    (
        "DST fall: next day same local time",
        {"due": "2026-10-31T23:59", "cutoff": None},
        "2026-11-01T23:59:00-05:00",
        1,
        10,
    ),
    (
        # due in the repeated hour (01:30 EDT); 01:15 EST is 45 real minutes later but earlier
        # on the wall clock: still one started day
        "DST fall: late in the repeated hour",
        {"due": "2026-11-01T01:30:00-04:00", "cutoff": None, "grace_minutes": 0},
        "2026-11-01T01:15:00-05:00",
        1,
        10,
    ),
    (
        "DST fall: one minute more",
        {"due": "2026-10-31T23:59", "cutoff": None},
        "2026-11-02T00:00:00-05:00",
        2,
        20,
    ),
]


@pytest.mark.parametrize(("name", "overrides", "submitted", "units", "penalty"), CASES)
def test_penalty_table(name: str, overrides: dict, submitted: str, units: int, penalty: float) -> None:
    result = lateness(policy(**overrides), at(submitted))
    assert (result.units, result.penalty_percent) == (units, penalty), (name, result.explanation)
    assert result.final(10) == pytest.approx(10 * (1 - penalty / 100))


EXTENSION_CASES = [
    # an extension to 2026-03-14 23:59 (past the cut-off): the cut-off moves 7 days too
    ("before the new due time, past the old cut-off", "2026-03-13T12:00:00-04:00", 0, 0),
    ("one day after the new due time", "2026-03-15T10:00:00-04:00", 1, 10),
    ("past the moved cut-off", "2026-03-20T00:00:00-04:00", 0, 100),
]


@pytest.mark.parametrize(("name", "submitted", "units", "penalty"), EXTENSION_CASES)
def test_extension_past_the_cutoff(name: str, submitted: str, units: int, penalty: float) -> None:
    extended = policy().extended(at("2026-03-14T23:59:00-04:00"))
    assert extended.cutoff == at("2026-03-19T23:59:00-04:00")
    result = lateness(extended, at(submitted))
    assert (result.units, result.penalty_percent) == (units, penalty), (name, result.explanation)


def test_the_verdict_depends_on_the_instant_not_on_how_its_zone_is_written() -> None:
    # Python subtracts two times carrying the same tzinfo as wall clocks: 03:30 EDT is 3h31
    # after 23:59 EST on the clock but 2h31 in real time (DST started at 02:00).
    from zoneinfo import ZoneInfo

    rule = policy(penalty="per_hour", percent=5, grace_minutes=0)
    local = datetime(2026, 3, 8, 3, 30, tzinfo=ZoneInfo(NY))
    assert lateness(rule, local) == lateness(rule, at("2026-03-08T07:30:00+00:00"))
    assert lateness(rule, local).units == 3
    # the cut-off too: 23:30 EDT on the 12th is before the cut-off, whatever zone object
    near = datetime(2026, 3, 12, 23, 30, tzinfo=ZoneInfo(NY))
    assert lateness(policy(), near).penalty_percent == 50


def test_explanations_say_how_the_penalty_was_computed() -> None:
    text = lateness(policy(cutoff=None), at("2026-03-20T12:00:00-04:00")).explanation
    assert "13 started days x 10% = 130%" in text and "capped at 50%" in text
    assert "2026-03-07 23:59 EST" in text
    assert "grace" in lateness(policy(), at("2026-03-08T00:05:00-05:00")).explanation
    assert "cut-off" in lateness(policy(), at("2026-03-13T00:00:00-04:00")).explanation
    unknown = lateness(policy(), None)
    assert unknown.penalty_percent == 0 and "unknown" in unknown.explanation
    assert lateness(None, at("2030-01-01T00:00:00+00:00")).penalty_percent == 0
    with pytest.raises(ValueError):
        lateness(policy(), datetime(2026, 3, 9))


def test_deadline_table_from_toml() -> None:
    data = tomllib.loads(
        """
        [deadline]
        due = 2026-03-07T23:59:00          # a TOML local time, read in `timezone`
        timezone = "Europe/Paris"
        grace_minutes = 15
        penalty = "per_hour"
        percent = 2.5
        cutoff = 2026-03-09T12:00:00+01:00  # an offset time is kept as it is
        """
    )["deadline"]
    parsed = parse_deadline(data, "assignment.toml")
    assert parsed.due == at("2026-03-07T23:59:00+01:00")
    assert parsed.cutoff == at("2026-03-09T12:00:00+01:00")
    assert (parsed.penalty, parsed.percent, parsed.floor, parsed.grace_minutes) == (
        "per_hour",
        2.5,
        0.0,
        15.0,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"due": "2026-03-07T23:59"}, "needs 'due' and 'timezone'"),
        ({"due": "2026-03-07T23:59", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"due": "tomorrow", "timezone": NY}, "no time of day"),
        ({"due": "2026-03-07 ", "timezone": NY}, "no time of day"),  # was 00:00 that day
        ({"due": "tomorrow at 5", "timezone": NY}, "not an ISO date"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "penalty": "weekly"}, "penalty 'weekly'"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "percent": -1}, "percent must be"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "percent": float("nan")}, "percent must be"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "grace_minutes": float("inf")}, "grace_minutes"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "floor": 150}, "percentages"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "cutoff": "2026-03-01T00:00"}, "before the due"),
        ({"due": "2026-03-07T23:59", "timezone": NY, "late": True}, "unknown key"),
    ],
)
def test_bad_deadline_tables_are_spec_errors(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_deadline(data, "assignment.toml")


def test_load_spec_reads_the_deadline(tmp_path, repo_root) -> None:
    from grader.spec import load_spec

    text = (repo_root / "solutions" / "mnist_nn" / "assignment.toml").read_text()
    (tmp_path / "assignment.toml").write_text(
        text + '\n[deadline]\ndue = "2026-03-07T23:59"\ntimezone = "America/New_York"\n'
    )
    spec = load_spec(tmp_path)
    assert spec.deadline is not None and spec.deadline.due == at("2026-03-07T23:59:00-05:00")
    assert load_spec(repo_root / "solutions" / "mnist_nn").deadline is None
