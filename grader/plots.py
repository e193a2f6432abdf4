"""Plots for the feedback pages and the class report: matplotlib, embedded as data: URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from .report import html_safe


def _figure(width: float = 6.0, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # the object API: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=90)
    return fig, fig.add_subplot()


def image_tag(fig: Any, alt: str) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{html_safe(alt)}' src='data:image/png;base64,{data}'>"


def curve_plot(
    student: Sequence[float], reference: Sequence[float] | None, title: str, ylabel: str
) -> str:
    fig, ax = _figure()
    ax.plot(range(len(student)), student, "o-", color="#c0392b", label="your notebook")
    if reference:
        ax.plot(range(len(reference)), reference, "s--", color="#2c3e50", label="reference")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return image_tag(fig, title)


def histogram(totals: Sequence[float], max_total: float, title: str) -> str:
    fig, ax = _figure()
    bins = max(5, min(25, int(max_total) + 1))
    ax.hist(totals, bins=bins, range=(0, max_total or 1), color="#34699a", edgecolor="white")
    ax.set_xlabel("points")
    ax.set_ylabel("students")
    ax.set_title(title, fontsize=10)
    return image_tag(fig, title)


def question_bars(labels: Sequence[str], shares: Sequence[float], title: str) -> str:
    fig, ax = _figure(6.0, 0.3 * len(labels) + 1.0)
    ax.barh(list(labels), [100 * s for s in shares], color="#3b8a58")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of students with full points")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    return image_tag(fig, title)
