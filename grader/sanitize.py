"""Making a student's executed notebook safe to show in a browser.

Everything in a submission is untrusted: HTML and JavaScript outputs, `<iframe>`s, SVG with
scripts, images of 50 000 × 50 000 pixels, megabytes of text, cell metadata that nbconvert's
templates would put into attributes. nbconvert does the rendering and the HTML sanitizing
(its `SanitizeHTML` preprocessor drops scripts and unknown output types, and
`HTMLExporter.sanitize_html` cleans Markdown and HTML with bleach); this preprocessor runs
first and does what nbconvert does not: it caps sizes, drops image bombs, and keeps only the
metadata the page needs.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

import bleach
from nbconvert.preprocessors import Preprocessor
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat import NotebookNode

MAX_IMAGE_BYTES = 2 * 2**20  # one image, decoded
MAX_IMAGE_PIXELS = 4000 * 4000  # width × height a browser would have to allocate
MAX_TEXT_CHARS = 100_000  # one output's text, one Markdown cell
MAX_PAGE_OUTPUT_BYTES = 8 * 2**20  # all outputs of one page together
_COMMENT_LINE = re.compile(r"^[ \t]*<!--.*?-->[ \t]*$", re.MULTILINE)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
IMAGE_TYPES = ("image/png", "image/jpeg")
SHOWN_TYPES = (*IMAGE_TYPES, "text/plain", "text/html", "text/markdown", "text/latex")

# Tags and attributes an output or Markdown cell may keep (a small table is fine; no
# images, frames, forms, scripts or styles: those are escaped and shown as text).
ALLOWED_TAGS = frozenset(
    {
        *bleach.ALLOWED_TAGS,
        *("p", "div", "span", "pre", "code", "br", "hr", "sub", "sup", "del", "s"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "dl", "dt", "dd"),
        *("table", "thead", "tbody", "tr", "th", "td", "caption"),
    }
)
ALLOWED_ATTRIBUTES = {
    "a": ["href", "title"],
    "th": ["colspan", "rowspan"],
    "td": ["colspan", "rowspan"],
}
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})


def image_size(mime: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header, without decoding it (None: unknown)."""
    try:
        if mime == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if mime == "image/gif" and data[:4] == b"GIF8":
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if mime == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def image_problem(mime: str, encoded: Any) -> str | None:
    """Why an image output may not be shown, or None when it may."""
    text = "".join(encoded) if isinstance(encoded, list) else str(encoded)
    if len(text) * 3 // 4 > MAX_IMAGE_BYTES:
        return f"an image of {len(text) * 3 // 4 / 2**20:.1f} MB (the page shows up to {MAX_IMAGE_BYTES // 2**20} MB)"
    if not _BASE64.fullmatch(text):
        return "an image that is not valid base64"
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return "an image that is not valid base64"
    size = image_size(mime, data)
    if size is None:
        return "an image whose size cannot be read"
    if size[0] * size[1] > MAX_IMAGE_PIXELS or 0 in size:
        return f"an image of {size[0]} × {size[1]} pixels"
    return None


def _cap(text: str, what: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"\n… [{what} cut here: {len(text):,} characters in all]"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _notice(text: str) -> NotebookNode:
    return NotebookNode(output_type="stream", name="stderr", text=f"[grader: {text}]\n")


def _numeric(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and 0 < value < 10_000 else None


class SafeOutputs(Preprocessor):
    """Cap sizes, drop image bombs, keep only harmless metadata. Runs before SanitizeHTML."""

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[Any, Any]:
        self._budget = MAX_PAGE_OUTPUT_BYTES
        return super().preprocess(nb, resources)

    def preprocess_cell(
        self, cell: NotebookNode, resources: dict[str, Any], index: int
    ) -> tuple[NotebookNode, dict[str, Any]]:
        cell.pop("attachments", None)  # Markdown images would be fetched or embedded unchecked
        if cell.cell_type in ("markdown", "raw"):
            # rendered here, shown by the template as it is (see grader/feedback.py)
            cell.metadata["grader_html"] = safe_markdown(cell.source)
        elif cell.cell_type == "code":
            cell.source = _cap(cell.source, "this cell")
            cell.outputs = self._outputs(cell.get("outputs", []))
        return cell, resources

    def _outputs(self, outputs: list[NotebookNode]) -> list[NotebookNode]:
        kept: list[NotebookNode] = []
        for out in outputs:
            if self._budget <= 0:
                kept.append(
                    _notice("further outputs omitted: this page has reached its size limit")
                )
                break
            kind = out.get("output_type")
            if kind == "stream":
                out.text = _cap(str(out.get("text", "")), "output")
                self._budget -= len(out.text)
            elif kind == "error":
                out.traceback = [
                    _cap(str(line), "traceback") for line in out.get("traceback", [])[:200]
                ]
                self._budget -= sum(len(line) for line in out.traceback)
            elif kind in ("display_data", "execute_result"):
                notice = self._data(out)
                if notice:
                    kept.append(_notice(notice))
                if not out.get("data"):
                    continue
            else:
                continue
            kept.append(out)
        return kept

    def _data(self, out: NotebookNode) -> str | None:
        data = out.get("data", {})
        metadata = out.get("metadata", {})
        clean_meta: dict[str, Any] = {}
        notice = None
        for mime in list(data):
            value = data[mime]
            if mime not in SHOWN_TYPES:
                del data[mime]  # scripts, SVG, widgets, anything nbconvert would drop
                notice = f"an output of type {mime[:60]} was not shown"
                continue
            if mime in IMAGE_TYPES:
                problem = image_problem(mime, value)
                if problem:
                    del data[mime]
                    notice = f"{problem} was not shown"
                    continue
                dims = metadata.get(mime, {}) if isinstance(metadata.get(mime), dict) else {}
                size = {k: _numeric(dims.get(k)) for k in ("width", "height")}
                clean_meta[mime] = {k: v for k, v in size.items() if v is not None}
            elif mime == "text/markdown":
                del data[mime]
                data["text/html"] = safe_markdown(_text(value))
            elif isinstance(value, str | list):
                text = "".join(value) if isinstance(value, list) else value
                data[mime] = _cap(text, "output")
            self._budget -= len(str(data.get(mime, "")))
        out.metadata = NotebookNode(clean_meta)  # no `isolated`, no attribute values of theirs
        return notice


def sanitizer() -> SanitizeHTML:
    """nbconvert's own sanitizer with the tags above: scripts, SVG, widgets, JavaScript and
    unknown output types removed; HTML and Markdown outputs cleaned by bleach."""
    return SanitizeHTML(
        tags=sorted(ALLOWED_TAGS), attributes=ALLOWED_ATTRIBUTES, strip=False, strip_comments=True
    )


def clean_html(html: str) -> str:
    """HTML made from student text (rendered Markdown): the allowlist above, nothing else."""
    return str(
        bleach.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            protocols=ALLOWED_PROTOCOLS,
            strip=False,
            strip_comments=True,
        )
    )


def safe_markdown(text: str) -> str:
    """A student's Markdown as HTML: raw HTML in it escaped (shown as text), links limited to
    http(s)/mailto, no images; then cleaned with the allowlist above."""
    import mistune

    render = mistune.create_markdown(escape=True, plugins=["strikethrough", "table"])
    text = _COMMENT_LINE.sub("", _cap(text, "this answer"))  # markers such as <!-- ANSWER: x -->
    return clean_html(str(render(text)))
