"""What the review page shows and saves, without the HTTP: questions, answers, scores.

Grading goes by question across students: for each free-response question, its model answer
from the source notebook, and every student's answer (Markdown rendered safely), the outputs
of the code cell just before it, the points and comment given so far and whether the answer
changed since it was scored. Saving checks everything first and writes one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from .authoring import MANUAL, cell_role, load_source, solution_lines
from .errors import UsageError
from .executed import unpack
from .gradebook import Gradebook, ManualScore
from .manual import answer_hash, check_comment, check_points
from .report import html_safe as e
from .results import SubmissionResult
from .sanitize import MAX_TEXT_CHARS, image_problem, safe_markdown
from .spec import AssignmentSpec, as_now

CONTEXT_CELLS = 4  # how far back to look for the code cell whose outputs an answer discusses
MAX_CONTEXT_CHARS = 4_000


class SaveRefused(ValueError):
    """A save the page must show as an error; nothing was written."""


@dataclass
class ReviewData:
    spec: AssignmentSpec  # read again when its files change (spec.as_now)
    gradebook: Path

    def model_answers(self, spec: AssignmentSpec) -> dict[str, str]:
        out = {}
        for cell in load_source(spec).cells:
            role = cell_role(cell)
            if role.role == MANUAL and role.question:
                out[role.question] = safe_markdown("\n".join(solution_lines(cell)))
        return out

    def state(self) -> dict[str, Any]:
        """Everything the page needs, as JSON-ready data (student text already made safe)."""
        spec = self.spec = as_now(self.spec)
        with Gradebook(self.gradebook) as book:
            results = book.current_results()
            entries = book.manual_entries()
            contexts = {r.student: _contexts(book, r, spec) for r in results}
        models = self.model_answers(spec)
        questions = [
            {"id": q.id, "title": q.title, "max": q.points, "model": models.get(q.id, "")}
            for q in spec.manual_questions
        ]
        students = []
        for r in results:
            answers = {}
            for q in spec.manual_questions:
                text = r.manual_answers.get(q.id, "")
                entry = entries.get((r.student, q.id))
                context = contexts[r.student].get(q.id, "")
                answers[q.id] = _answer(text, entry, q.points, context)
            students.append({"student": r.student, "status": r.status, "answers": answers})
        return {"title": spec.title, "questions": questions, "students": students}

    def save(self, data: Any) -> dict[str, Any]:
        """Save one change from the page: {student, question, answer_hash, points?, comment?}."""
        if not isinstance(data, dict):
            raise SaveRefused("the request is not a JSON object")
        qid = data.get("question")
        self.spec = as_now(self.spec)  # checked against the points the question has now
        manual = {q.id: q for q in self.spec.manual_questions}
        if qid not in manual:
            raise SaveRefused(f"unknown free-response question {str(qid)[:40]!r}")
        student = data.get("student")
        fields: dict[str, Any] = {}
        try:
            if "points" in data:
                fields["points"] = check_points(data["points"], manual[qid].points)
            if "comment" in data:
                fields["comment"] = check_comment(data["comment"])
        except ValueError as exc:
            raise SaveRefused(str(exc)) from None
        if not fields:
            raise SaveRefused("nothing to save: give points or a comment")
        with Gradebook(self.gradebook) as book:
            current = {r.student: r for r in book.current_results()}
            if not isinstance(student, str) or student not in current:
                raise SaveRefused(f"no graded submission from student {str(student)[:60]!r}")
            digest = answer_hash(current[student].manual_answers.get(qid, ""))
            if data.get("answer_hash") != digest:
                raise SaveRefused(
                    "this answer changed since the page loaded (a new submission was graded): "
                    "reload the page and score it again"
                )
            entry = book.update_manual(student, qid, digest, **fields)
        return _entry_json(entry)


def _entry_json(entry: ManualScore | None) -> dict[str, Any]:
    if entry is None:
        return {"points": None, "comment": "", "updated_at": ""}
    return {"points": entry.points, "comment": entry.comment, "updated_at": entry.updated_at}


def _answer(text: str, entry: ManualScore | None, most: float, context: str) -> dict[str, Any]:
    """One answer on the page; a score given to another answer, or above what the question
    is worth now (its points were lowered since), is shown as before and asked for again."""
    digest = answer_hash(text)
    stale = entry is not None and (
        entry.answer_hash not in ("", digest) or (entry.points or 0) > most
    )
    shown = _entry_json(None if stale else entry)
    state = "review-again" if stale else ("graded" if shown["points"] is not None else "ungraded")
    return {
        "html": safe_markdown(text) if text.strip() else "<p><em>(no answer)</em></p>",
        "chars": len(text),
        "hash": digest,
        "context": context,
        "state": state,
        "before": _entry_json(entry) if stale else None,
        **shown,
    }


def _contexts(book: Gradebook, r: SubmissionResult, spec: AssignmentSpec) -> dict[str, str]:
    """Per manual question, the outputs of the code cell just before its answer (HTML)."""
    blob = book.executed(r.student)
    try:
        cells = unpack(blob).cells if blob is not None else []
    except ValueError:  # a damaged gradebook: the answer is still shown, without context
        return {}
    out = {}
    for i, cell in enumerate(cells):
        role = cell_role(cell)
        if role.role != MANUAL or not role.question:
            continue
        for prev in reversed(cells[max(0, i - CONTEXT_CELLS) : i]):
            if prev.cell_type == "code" and prev.get("outputs"):
                out[role.question] = _outputs_html(prev)
                break
    return out


def _outputs_html(cell: NotebookNode) -> str:
    parts: list[str] = []
    budget = MAX_CONTEXT_CHARS
    for o in cell.outputs:
        kind = o.get("output_type")
        text = ""
        if kind == "stream":
            text = str(o.get("text", ""))
        elif kind == "error":
            text = f"{o.get('ename', '')}: {o.get('evalue', '')}"
        elif kind in ("display_data", "execute_result"):
            data = o.get("data", {})
            png = data.get("image/png")
            if isinstance(png, str) and image_problem("image/png", png) is None:
                parts.append(f"<img alt='output' src='data:image/png;base64,{png.strip()}'>")
                continue
            text = str(data.get("text/plain", ""))
        if text and budget > 0:
            parts.append(f"<pre>{e(text[:budget])}</pre>")
            budget -= len(text)
    return "".join(parts)[: MAX_TEXT_CHARS * 30]


def check_gradebook(path: Path) -> None:
    if not path.is_file():
        raise UsageError(
            f"no gradebook at {path}",
            hint="grade the submissions first: grader grade ... --out DIR",
        )
