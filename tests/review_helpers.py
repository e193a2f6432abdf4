"""A gradebook holding the sample class's real free-response answers, without running kernels.

The samples are read and assembled exactly as grading does; the auto-graded questions get
a fixed result (these tests are about reviewing answers, not about checking them), and the
assembled notebook stands for the executed one.
"""

from pathlib import Path

from grader.assemble import assemble, content_hash, parse_notebook
from grader.authoring import make_template
from grader.executed import keep_executed, pack
from grader.gradebook import Gradebook
from grader.results import CheckResult, QuestionResult, SubmissionResult
from grader.scoring import manual_pending
from grader.spec import AssignmentSpec

SAMPLES = Path(__file__).resolve().parent / "samples" / "mnist_nn"


def sample_result(spec: AssignmentSpec, path: Path, student: str) -> tuple[SubmissionResult, bytes]:
    raw = path.read_bytes()
    nb, _ = parse_notebook(raw, path.name)
    asm = assemble(make_template(spec), nb)
    questions = [
        manual_pending(q.id, q.points)
        if not q.auto
        else QuestionResult(
            q.id, "passed", q.points, q.points, [CheckResult("value", True, "Right.")]
        )
        for q in spec.questions
    ]
    result = SubmissionResult(
        student, path.name, content_hash(raw), "graded", questions, asm.manual_answers
    )
    return result, pack(keep_executed(asm.notebook, {"answers": {}}))


def sample_gradebook(spec: AssignmentSpec, path: Path, count: int = 3) -> list[str]:
    students = []
    with Gradebook(path) as book:
        for file in sorted(SAMPLES.glob("*.ipynb"))[:count]:
            student = file.name.split("_")[0]
            result, executed = sample_result(spec, file, student)
            book.save(result, f"test:{result.content_hash}", executed)
            students.append(student)
    return students
