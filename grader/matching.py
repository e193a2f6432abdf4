"""Finding a submission's cells by what they contain, when marker and metadata are gone.

Two searches, both bounded so that no notebook can keep the grader busy:

* **answers by content**: the cell that assigns an answer's name at top level, or defines
  the class or function of that name (see `answer_candidates` and `choose_candidate`);
* **edited locked cells**: a cell that is close to a locked cell's text (a restored copy
  is graded and the edit reported); `FuzzyMatcher` compares only pairs that cheap upper
  bounds cannot rule out, on capped lengths, within a time budget per submission.
"""

from __future__ import annotations

import ast
import difflib
import re
import time
from collections import Counter
from dataclasses import dataclass

FUZZY_LOCKED_RATIO = 0.75
FUZZY_MAX_CHARS = 3000  # longer texts are compared on their first 3000 characters
FUZZY_BUDGET_SECONDS = 5.0  # per submission; what is left unmatched stays the student's
_MAGIC = re.compile(r"^\s*[%!]")


def defined_names(source: str) -> set[str]:
    """Names a cell binds at top level: assignments, `def`, `class`, `import ... as`.

    IPython magics (`%matplotlib inline`, `!pip ...`) are ignored; a cell that is not Python
    binds nothing.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        text = "\n".join("" if _MAGIC.match(line) else line for line in source.split("\n"))
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return set()
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        for target in targets:
            names.update(sub.id for sub in ast.walk(target) if isinstance(sub, ast.Name))
    return names


def answer_names(question: str, template_source: str) -> set[str]:
    """What an answer cell must bind to be that answer: the names its template stub binds
    (`first_nine_index = ...`, `class NN_Model3`), or else the question id."""
    return defined_names(template_source) or {question}


@dataclass(frozen=True)
class Candidate:
    """A student cell that binds an answer's name, found where no marker or metadata was."""

    position: int  # the cell's index in the student's own file
    after: int  # the template cell it followed (-1: before every template cell)
    names: frozenset[str]


def choose_candidate(
    candidates: list[Candidate], region: tuple[int, int]
) -> tuple[Candidate, str] | None:
    """The one rule for answers found by content, and why it chose what it chose.

    `region` is the answer's place in the template: (the locked cell before it, the locked
    cell after it). A candidate that follows a template cell inside that region wins over
    one elsewhere; among several, the last one in the student's file is taken (the last one
    before the next locked cell: what the student ran last before moving on).
    """
    if not candidates:
        return None
    low, high = region
    inside = [c for c in candidates if low <= c.after < high]
    pool = inside or candidates
    chosen = max(pool, key=lambda c: c.position)
    where = "the answer's place in the notebook" if inside else "the notebook"
    if len(pool) == 1:
        why = f"the only cell in {where} that defines it"
    else:
        why = (
            f"the last of {len(pool)} cells in {where} that define it, before the next given cell"
            if inside
            else f"the last of {len(pool)} cells that define it"
        )
    return chosen, why


class FuzzyMatcher:
    """Edited copies of locked cells, found by text similarity within a time budget.

    `difflib`'s ratio costs up to the product of the two lengths, so it runs only for pairs
    whose cheap upper bounds (lengths, then character counts) could still beat the best
    match so far, best bound first, on texts capped at FUZZY_MAX_CHARS.
    """

    def __init__(self, budget: float = FUZZY_BUDGET_SECONDS) -> None:
        self.deadline = time.monotonic() + budget
        self.pairs_compared = 0
        self.budget_exhausted = False
        self._counts: dict[str, Counter[str]] = {}

    def _count(self, text: str) -> Counter[str]:
        if text not in self._counts:
            self._counts[text] = Counter(text)
        return self._counts[text]

    def best(self, text: str, candidates: list[tuple[int, str]]) -> int | None:
        """The candidate (index, text) most similar to `text` at FUZZY_LOCKED_RATIO or more."""
        text = text[:FUZZY_MAX_CHARS]
        if not text or self.budget_exhausted:
            return None
        counts = self._count(text)
        bounded: list[tuple[float, int, str]] = []
        for index, other in candidates:
            other = other[:FUZZY_MAX_CHARS]
            total = len(text) + len(other)
            if not other or 2 * min(len(text), len(other)) / total < FUZZY_LOCKED_RATIO:
                continue  # no alignment of such different lengths can reach the ratio
            bound = 2 * sum((counts & self._count(other)).values()) / total
            if bound >= FUZZY_LOCKED_RATIO:
                bounded.append((bound, index, other))
        bounded.sort(key=lambda b: -b[0])
        best, best_ratio = None, FUZZY_LOCKED_RATIO
        for bound, index, other in bounded:
            if bound < best_ratio or (best is not None and bound == best_ratio):
                break  # nothing further down can do better
            if time.monotonic() > self.deadline:
                self.budget_exhausted = True
                break
            self.pairs_compared += 1
            ratio = difflib.SequenceMatcher(None, other, text, autojunk=False).ratio()
            if ratio > best_ratio or (best is None and ratio == best_ratio):
                best, best_ratio = index, ratio
        return best
