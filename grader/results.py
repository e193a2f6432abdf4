"""Plain data records of a grading run. Everything here round-trips through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Submission status values, from best to worst.
GRADED = "graded"  # every question was checked (and every manual one scored)
NEEDS_MANUAL = "needs manual grading"  # auto-graded; free-response answers wait for a score
PARTIAL = "partial"  # the notebook ran but some questions could not be graded (fault, timeout)
ERROR = "error"  # the submission could not be graded at all (unreadable file, ...)

# The name of the sub-check run_check reports when a check itself failed to complete.
GRADER_CHECK = "grader"

# Question status values.
Q_PASSED = "passed"
Q_PARTIAL = "partial"
Q_FAILED = "failed"
Q_MISSING = "missing"  # no answer found in the notebook
Q_UNGRADABLE = "ungradable"  # the answer could not be produced (kernel died, timeout)
Q_MANUAL = "manual"  # waits for a human score


def writable_text(text: str) -> str:
    """Text any file, terminal or database can hold: lone surrogates (from a JSON escape such
    as \\ud800, or an undecodable file name) become U+FFFD; valid pairs are joined."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def writable(data: Any) -> Any:
    """`writable_text` applied to every string (keys too) of plain JSON-like data."""
    if isinstance(data, str):
        return writable_text(data)
    if isinstance(data, dict):
        return {writable(k): writable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [writable(v) for v in data]
    return data


@dataclass
class CheckResult:
    """One sub-check of a question, decided outside the student's kernel."""

    name: str
    passed: bool
    message: str = ""
    note: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**data)


@dataclass
class QuestionResult:
    id: str
    status: str
    points: float
    max_points: float
    checks: list[CheckResult] = field(default_factory=list)
    message: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionResult:
        data = dict(data)
        data["checks"] = [CheckResult.from_dict(c) for c in data.get("checks", [])]
        return cls(**data)


@dataclass
class SubmissionResult:
    student: str
    file: str
    content_hash: str
    status: str
    questions: list[QuestionResult] = field(default_factory=list)
    manual_answers: dict[str, str] = field(default_factory=dict)
    changed_cells: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    log: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    submitted_at: str = ""
    # where it came from (time source, LMS user id, roster match): grader/course.py
    origin: dict[str, Any] = field(default_factory=dict)
    # lateness and penalty, computed when the outputs are written: grader/lateness.py
    late: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return round(sum(q.points for q in self.questions), 6)

    @property
    def max_total(self) -> float:
        return round(sum(q.max_points for q in self.questions), 6)

    @property
    def final(self) -> float:
        """The total after the late penalty."""
        penalty = float(self.late.get("penalty_percent", 0.0))
        return round(self.total * (1 - penalty / 100), 6)

    @property
    def pending_points(self) -> float:
        """Points of free-response questions that wait for a human's score."""
        return round(sum(q.max_points for q in self.questions if q.status == Q_MANUAL), 6)

    def settle_status(self) -> None:
        """`graded` and `needs manual grading` follow the manual scores given so far."""
        if self.status in (GRADED, NEEDS_MANUAL):
            self.status = NEEDS_MANUAL if self.pending_points else GRADED

    @property
    def grader_failed(self) -> bool:
        """A check could not be completed (the grader's failure, not the student's)."""
        return any(
            c.name == GRADER_CHECK and not c.passed for q in self.questions for c in q.checks
        )

    def question(self, qid: str) -> QuestionResult | None:
        for q in self.questions:
            if q.id == qid:
                return q
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        data["max_total"] = self.max_total
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionResult:
        data = writable({k: v for k, v in data.items() if k not in ("total", "max_total")})
        data["questions"] = [QuestionResult.from_dict(q) for q in data.get("questions", [])]
        return cls(**data)
