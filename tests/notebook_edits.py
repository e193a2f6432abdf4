"""Edits of a notebook's text that tests make to a copy of a submission."""

import nbformat


def without_experiments(text: str) -> str:
    """The notebook `text` with its experiments answer left empty: grading it trains no
    reference experiment, which a test whose checks.py is edited (a new reference cache
    key) would otherwise train again."""
    nb = nbformat.reads(text, as_version=4)
    cells = [c for c in nb.cells if c.source.startswith("# ANSWER: experiments")]
    assert len(cells) == 1
    cells[0].source = "# ANSWER: experiments\nexperiments = {}\n"
    return nbformat.writes(nb)
