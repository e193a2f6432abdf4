"""Deadlines and late penalties: small pure rules, decided from times alone.

A policy (the `[deadline]` table of assignment.toml) has a due time in a named time zone,
a grace period, a penalty rule and an optional cut-off:

* ``none``: no penalty (but zero after the cut-off, if there is one);
* ``per_day`` / ``per_hour``: ``percent`` off for every started day or hour late, never
  below ``floor`` percent of the raw score;
* after ``cutoff``: zero.

A submission inside the grace period is on time; past it, lateness counts from the due time.
A day is a calendar day in the deadline's time zone (the same wall-clock time the next day,
whatever a daylight-saving change did in between); an hour is an hour of real time.
An extension moves the due time and the cut-off together, by the same amount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import SpecError

RULES = ("none", "per_day", "per_hour")
DEADLINE_KEYS = ("due", "timezone", "grace_minutes", "penalty", "percent", "floor", "cutoff")


@dataclass(frozen=True)
class DeadlinePolicy:
    due: datetime  # aware, in `timezone`
    timezone: str
    grace_minutes: float = 0.0
    penalty: str = "none"
    percent: float = 0.0  # per day or hour late
    floor: float = 0.0  # the final score never falls below this percentage of the raw one
    cutoff: datetime | None = None  # aware; zero after it

    def extended(self, new_due: datetime) -> DeadlinePolicy:
        """The policy for a student whose due time moved to `new_due` (cut-off moves along)."""
        new_due = new_due.astimezone(self.zone)
        shift = new_due - self.due
        cutoff = self.cutoff + shift if self.cutoff is not None else None
        return DeadlinePolicy(
            new_due, self.timezone, self.grace_minutes, self.penalty, self.percent,
            self.floor, cutoff,
        )  # fmt: skip

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Lateness:
    """How late one submission was and what that costs, with the reason in words."""

    late_seconds: float  # 0 when on time or inside the grace period
    units: int  # started days or hours late (by the policy's rule)
    penalty_percent: float  # 0..100 of the raw score
    explanation: str

    def final(self, raw: float) -> float:
        return round(raw * (1 - self.penalty_percent / 100), 6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "late_seconds": self.late_seconds,
            "units": self.units,
            "penalty_percent": self.penalty_percent,
            "explanation": self.explanation,
        }


ON_TIME = Lateness(0.0, 0, 0.0, "on time")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    return " ".join([*parts, f"{mins}min"])


def _days_late(policy: DeadlinePolicy, submitted: datetime) -> int:
    """Started calendar days late, counted in the deadline's zone (DST-proof)."""
    due = policy.due.astimezone(policy.zone)
    local = submitted.astimezone(policy.zone)
    days = max((local.date() - due.date()).days - 1, 0)
    while _wall_clock_add(due, days) < local:
        days += 1
    # only called past the grace period: at least one day started, even when the wall clock
    # went back (due at 01:30 on the night DST ends, submitted at the second 01:15)
    return max(days, 1)


def _wall_clock_add(due: datetime, days: int) -> datetime:
    """The same wall-clock time `days` later in due's zone (aware-datetime arithmetic)."""
    moved = due.replace(tzinfo=None) + timedelta(days=days)
    return moved.replace(tzinfo=due.tzinfo)


def lateness(policy: DeadlinePolicy | None, submitted: datetime | None) -> Lateness:
    """The pure rule: when it was due, when it came, what it costs."""
    if policy is None:
        return ON_TIME
    if submitted is None:
        return Lateness(0.0, 0, 0.0, "submission time unknown: no late penalty applied")
    if submitted.tzinfo is None:
        raise ValueError("submission times must carry a time zone")
    due_text = policy.due.astimezone(policy.zone).strftime("%Y-%m-%d %H:%M %Z")
    # In UTC: between two times in the same zone Python subtracts wall clocks (DST ignored).
    late = (submitted.astimezone(UTC) - policy.due.astimezone(UTC)).total_seconds()
    if late <= policy.grace_minutes * 60:
        if late > 0:
            return Lateness(0.0, 0, 0.0, f"{_duration(late)} after {due_text}, inside the grace period")
        return ON_TIME
    when = f"submitted {_duration(late)} after the due time {due_text}"
    if policy.cutoff is not None and submitted.astimezone(UTC) > policy.cutoff.astimezone(UTC):
        cutoff_text = policy.cutoff.astimezone(policy.zone).strftime("%Y-%m-%d %H:%M %Z")
        return Lateness(late, 0, 100.0, f"{when}, past the cut-off {cutoff_text}: scored 0")
    if policy.penalty == "none":
        return Lateness(late, 0, 0.0, f"{when}; no late penalty")
    if policy.penalty == "per_day":
        units, unit = _days_late(policy, submitted), "day"
    else:
        units, unit = math.ceil(late / 3600), "hour"
    raw_penalty = units * policy.percent
    penalty = min(raw_penalty, 100.0 - policy.floor)
    plural = "s" if units != 1 else ""
    text = f"{when}: {units} started {unit}{plural} x {policy.percent:g}% = {raw_penalty:g}%"
    if penalty < raw_penalty:
        text += f", capped at {penalty:g}% (the floor keeps {policy.floor:g}% of the score)"
    return Lateness(late, units, penalty, text + " off")


# ------------------------------------------------------------------ reading the policy


def parse_time(value: object, zone: str, where: str) -> datetime:
    """A TOML datetime or an ISO string; a naive time is read in `zone`."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= 10:  # "2026-03-07" would be that day's 00:00, a day before most mean
            raise SpecError(
                f"{where}: {value!r} has no time of day", hint="write it in full: 2026-03-07T23:59"
            )
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise SpecError(f"{where}: {value!r} is not an ISO date and time") from exc
    if not isinstance(value, datetime):
        raise SpecError(f"{where}: expected a date and time such as 2026-03-07T23:59")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(ZoneInfo(zone))


def parse_deadline(data: dict[str, Any], where: str) -> DeadlinePolicy:
    """`[deadline]` of assignment.toml into a policy; every mistake is a SpecError."""
    unknown = sorted(set(data) - set(DEADLINE_KEYS))
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint=f"allowed keys: {', '.join(DEADLINE_KEYS)} (see docs/authoring.md)",
        )
    if "due" not in data or "timezone" not in data:
        raise SpecError(f"{where}: [deadline] needs 'due' and 'timezone'")
    zone = str(data["timezone"])
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SpecError(f"{where}: unknown time zone {zone!r}", hint="e.g. Europe/Paris") from exc
    penalty = str(data.get("penalty", "none"))
    if penalty not in RULES:
        raise SpecError(f"{where}: penalty {penalty!r}", hint=f"use one of {', '.join(RULES)}")
    numbers = {}
    for key in ("grace_minutes", "percent", "floor"):
        value = data.get(key, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise SpecError(f"{where}: {key} must be a finite number >= 0")
        numbers[key] = float(value)
    if numbers["floor"] > 100 or numbers["percent"] > 100:
        raise SpecError(f"{where}: percent and floor are percentages (0..100)")
    due = parse_time(data["due"], zone, f"{where} due")
    cutoff = parse_time(data["cutoff"], zone, f"{where} cutoff") if "cutoff" in data else None
    if cutoff is not None and cutoff < due:
        raise SpecError(f"{where}: the cut-off is before the due time")
    return DeadlinePolicy(due, zone, cutoff=cutoff, penalty=penalty, **numbers)
