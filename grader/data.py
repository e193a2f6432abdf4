"""Find, download, verify and stage an assignment's data set file.

Everything about a data set comes from its :class:`~grader.spec.DatasetSpec`; nothing here
knows which data set it is. :func:`resolve_dataset` looks, in this order, at

1. an explicit path (argument, else the environment variable named by ``spec.env``);
   a path that is given but missing is an error, never silently skipped;
2. the user's cache, ``<cache>/datasets/<filename>`` (see :func:`default_cache_dir`);
3. the resource ``spec.package_resource`` of the installed package ``spec.package``;
4. a download of ``spec.url`` into the cache.

pooch downloads (timeouts, retries, a temporary file, a progress bar) and hashes. The policy is
ours: a file whose size or sha256 differs from the known one is used only if the structural
``validator`` accepts it (with a DatasetHashWarning); a corrupt cached file is moved aside; a
download appears in the cache only once verified. Every failure is a
:class:`~grader.errors.DataError` that says how to fix it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pooch
import requests

from .errors import DataError
from .fileio import atomic_write_bytes
from .spec import DatasetSpec

Validator = Callable[[Path], None]
CACHE_ENV = "GRADER_CACHE_DIR"


class DatasetHashWarning(UserWarning):
    """A data set file differs from the known one (sha256) but is used."""


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, as lowercase hex."""
    try:
        return str(pooch.file_hash(str(path), alg="sha256"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="check that it is readable") from exc


def default_cache_dir() -> Path:
    """``$GRADER_CACHE_DIR``, else the user's cache folder for grader (``~/.cache/grader``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(pooch.os_cache("grader"))


def dataset_cache_path(spec: DatasetSpec, cache_dir: Path | None = None) -> Path:
    """Where the cache keeps this data set: ``<cache>/datasets/<filename>``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "datasets" / spec.filename


def _verify(
    path: Path, spec: DatasetSpec, validator: Validator | None, what: str, *, trusted: bool = False
) -> str | None:
    """None if the file may be used, else what is wrong with it. A file of another size or
    sha256 is used, with a DatasetHashWarning, if the validator accepts it, or if the user
    chose it (``trusted``) and there is no validator."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        problem = f"{what} is {size} bytes, not the {spec.size} bytes of the known file"
    elif (digest := sha256_file(path)) != spec.sha256.lower():
        problem = f"{what} has sha256 {digest}, not the known {spec.sha256.lower()}"
    else:
        return None
    if validator is not None:
        try:
            validator(path)
        except Exception as exc:
            return f"{problem}, and it failed structural validation: {exc}"
        note = "structural validation passed, so it is used; results may differ if the data changed"
    elif trusted:
        note = "using it as given (no structural validator)"
    else:
        return problem
    warnings.warn(DatasetHashWarning(f"{problem}; {note}"), stacklevel=3)
    return None


class _Downloader:
    """pooch's HTTPDownloader, but a 4xx answer is final (pooch would retry it), the body is
    kept exactly as sent, and every response is closed (pooch leaves a failed one open)."""

    def __init__(self, show: bool, timeout: float) -> None:
        self.responses: list[requests.Response] = []
        self.http = pooch.HTTPDownloader(
            progressbar=show,
            timeout=timeout,
            headers={"Accept-Encoding": "identity"},
            hooks={"response": self._check},
        )

    def _check(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses.append(response)
        if 400 <= response.status_code < 500:
            raise DataError(
                f"downloading {response.url} failed: HTTP {response.status_code} {response.reason}",
                hint="the URL may have moved; pass a copy of the file explicitly instead",
            )
        # A .gz served with "Content-Encoding: gzip" is saved compressed: without the header
        # before the first read, urllib3 sets up no decoder.
        response.raw.headers.pop("Content-Encoding", None)

    def __call__(self, url: str, output_file: str, fetcher: pooch.Pooch | None) -> None:
        try:
            self.http(url, output_file, fetcher)
        finally:
            while self.responses:
                self.responses.pop().close()


def download_file(
    url: str,
    dest: Path,
    spec: DatasetSpec,
    *,
    validator: Validator | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest``, verify it against ``spec`` and return ``dest``.

    pooch streams it into a private folder beside ``dest``, retrying connection errors,
    timeouts (``timeout`` seconds to connect and between two reads), 5xx answers and truncated
    bodies up to ``retries`` times. The verified file is renamed to ``dest``; on any failure
    (KeyboardInterrupt too) nothing is left and an existing ``dest`` is untouched. A progress
    bar is drawn on stderr if ``progress`` (by default, if stderr is a terminal).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"cannot download {url}: not an http(s) URL", hint="fix the data set spec")
    dest = Path(dest).expanduser()
    show = progress if progress is not None else sys.stderr is not None and sys.stderr.isatty()
    logger, level = pooch.get_logger(), pooch.get_logger().level
    logger.setLevel(logging.WARNING)  # its log would name our private folder
    name = dest.name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=dest.parent) as folder:
            # No known hash for pooch: it would delete a file of another hash before the
            # validator could judge it. _verify checks it below, before it enters the cache.
            fetcher = pooch.Pooch(folder, "", {name: None}, {name: url}, retry_if_failed=retries)
            got = Path(fetcher.fetch(name, downloader=_Downloader(show, timeout)))
            why = _verify(got, spec, validator, f"the file downloaded from {url}")
            if why is not None:
                raise DataError(
                    f"{why}; nothing was kept",
                    hint="the URL may serve something else now, or the download was corrupted: "
                    "try again, or pass a known-good copy of the file explicitly",
                )
            os.replace(got, dest)
    except requests.RequestException as exc:
        truncated = isinstance(exc, requests.exceptions.ChunkedEncodingError)
        tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
        raise DataError(
            f"downloading {url} failed after {tries}: "
            f"{'transfer truncated' if truncated else type(exc).__name__}: {exc}",
            hint="check the network connection, or pass a copy of the file explicitly",
        ) from exc
    except OSError as exc:
        raise DataError(
            f"cannot write the download of {url} into {dest.parent}: {exc}",
            hint=f"make it writable, or choose another cache with {CACHE_ENV}=/some/folder",
        ) from exc
    finally:
        logger.setLevel(level)
    return dest


def _explicit_file(given: str | Path, spec: DatasetSpec, source: str) -> Path:
    path = Path(given).expanduser()
    if path.is_dir() and (path / spec.filename).is_file():
        path = path / spec.filename
    if not path.is_file():
        raise DataError(
            f"the data set file {path} (from {source}) "
            + ("is not a file" if path.exists() else "does not exist"),
            hint=f"give the path of {spec.filename}, or unset it to let the grader find it",
        )
    return path


def _package_file(spec: DatasetSpec, cache_file: Path) -> tuple[Path | None, str]:
    """The packaged copy of the file, or None and why not."""
    if not spec.package or not spec.package_resource:
        return None, "no package is configured"
    where = f"{spec.package}/{spec.package_resource}"
    try:
        resource = importlib.resources.files(spec.package).joinpath(spec.package_resource)
        if not resource.is_file():
            return None, f"the installed package has no {where}"
        if isinstance(resource, Path):
            return resource, ""
        atomic_write_bytes(cache_file, resource.read_bytes())  # e.g. from a zipped package
        return cache_file, ""
    except ModuleNotFoundError:
        return None, f"the package {spec.package!r} is not installed"
    except Exception as exc:  # a broken package can raise anything on import
        return None, f"cannot read {where} ({type(exc).__name__}: {exc})"


def _fix_hint(spec: DatasetSpec, cache_file: Path) -> str:
    ways = [f"set {spec.env}=/path/to/{spec.filename}" if spec.env else "pass the file's path"]
    if spec.package and spec.package_resource:
        ways.append(f"install the package that provides the module {spec.package!r}")
    return "; or ".join([*ways, f"put a copy at {cache_file}"])


def resolve_dataset(
    spec: DatasetSpec,
    *,
    explicit: str | Path | None = None,
    cache_dir: Path | None = None,
    validator: Validator | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> Path:
    """The path of a verified copy of the data set file, found in the module docstring's order.

    ``validator`` raises on a structurally bad file; a file of another hash is used only if it
    passes. With ``download=False``, a file not found locally is a DataError.
    """
    cache_file = dataset_cache_path(spec, cache_dir)
    given = explicit if explicit not in (None, "") else None
    source = "the explicit path"
    if given is None and spec.env and os.environ.get(spec.env):
        given, source = os.environ[spec.env], f"${spec.env}"
    if given is not None:
        path = _explicit_file(given, spec, source)
        what = f"the data set file {path} (from {source})"
        if (why := _verify(path, spec, validator, what, trusted=True)) is not None:
            raise DataError(why, hint=f"use an intact copy of {spec.filename}")
        return path

    tried = []
    if not cache_file.is_file():
        tried.append(f"not in the cache ({cache_file})")
    elif (why := _verify(cache_file, spec, validator, f"the cached file {cache_file}")) is None:
        return cache_file
    else:
        aside = cache_file.with_name(cache_file.name + ".corrupt")
        try:
            os.replace(cache_file, aside)
        except OSError as exc:
            raise DataError(f"{why}; cannot move it aside: {exc}", hint="delete it") from exc
        tried.append(f"{why}; moved it to {aside}")
        warnings.warn(DatasetHashWarning(tried[-1]), stacklevel=2)

    packaged, why = _package_file(spec, cache_file)
    if packaged is not None:
        why = _verify(packaged, spec, validator, f"the packaged file {packaged}")
        if why is None:
            return packaged
        warnings.warn(DatasetHashWarning(f"{why}; ignoring it"), stacklevel=2)
    tried.append(why)

    hint = _fix_hint(spec, cache_file)
    if not download:
        raise DataError(
            f"{spec.filename} was not found ({'; '.join(tried)}) and downloading is disabled",
            hint=hint,
        )
    try:
        return download_file(spec.url, cache_file, spec, validator=validator, progress=progress)
    except DataError as exc:
        raise DataError(
            f"{spec.filename} was not found locally ({'; '.join(tried)}) and {exc.message}",
            hint=f"{exc.hint}; or {hint}",
        ) from exc


def stage_dataset(src: Path, workdir: Path, stage_as: str) -> Path:
    """Put a read-only copy of ``src`` at ``workdir/stage_as`` (parents created), atomically.

    A copy, never a hard link (through one, a student kernel once could write into the
    instructor's cached file) and never a symlink (which a sandbox may not resolve).
    """
    src, workdir = Path(src), Path(workdir)
    target = workdir / stage_as
    if Path(stage_as).is_absolute() or not target.resolve().is_relative_to(workdir.resolve()):
        raise DataError(
            f"cannot stage the data set as {stage_as!r}: it is not a path inside the work folder",
            hint="stage_as must be a relative path such as data/file.gz",
        )
    if not src.is_file():
        raise DataError(f"cannot stage {src}: it is not a file", hint="resolve the data set first")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and os.path.samefile(src, target)):
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
    except OSError as exc:
        raise DataError(
            f"cannot stage {src} as {target}: {exc}",
            hint="check that the work folder is writable and the data set readable",
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return target
