"""Find, download, verify and stage an assignment's data set file.

Everything about a data set comes from its :class:`~grader.spec.DatasetSpec` (file name,
URL, sha256, size, environment variable, package resource); nothing here knows which data
set it is. :func:`resolve_dataset` looks, in this order, at

1. an explicit path (argument, else the environment variable named by ``spec.env``);
   a path that is given but missing is an error, never silently skipped;
2. the user's cache, ``<cache>/datasets/<filename>`` (see :func:`default_cache_dir`);
3. the resource ``spec.package_resource`` of the installed package ``spec.package``;
4. a download of ``spec.url`` into the cache.

Files are checked by size (cheap) and sha256 (hashed once per process for each
(path, size, mtime)). A file whose hash differs from the known one is only used when the
structural ``validator`` accepts it, and then with one :class:`DatasetHashWarning`.
Downloads are written to a temporary file beside the destination and moved into place
only after verification, so a failure never leaves a partial file behind.

Every failure is a :class:`~grader.errors.DataError` that says what failed and how to fix it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import requests
import urllib3

from .errors import DataError
from .spec import DatasetSpec

__all__ = [
    "CACHE_ENV",
    "DatasetHashWarning",
    "dataset_cache_path",
    "default_cache_dir",
    "download",
    "resolve_dataset",
    "sha256_file",
    "stage_dataset",
]

Validator = Callable[[Path], None]

CACHE_ENV = "GRADER_CACHE_DIR"
CHUNK_SIZE = 1 << 20  # 1 MiB
BACKOFF_BASE = 0.5  # seconds before the first retry; doubled for each further one
BACKOFF_MAX = 8.0  # longest single wait between two attempts
BACKOFF_TOTAL = 20.0  # longest total wait over all retries of one download
PROGRESS_INTERVAL = 0.1  # seconds between two redraws of the progress bar


class DatasetHashWarning(UserWarning):
    """A data set file differs from the known one (sha256) but passed structural validation."""


# ----------------------------------------------------------------------------- hashing

_FileKey = tuple[str, int, int, int, int]
_HASHES: dict[_FileKey, str] = {}
# Files whose hash differs from the expected one but that a validator accepted (and that
# were reported once with a DatasetHashWarning): (file key, expected sha256).
_ACCEPTED: set[tuple[_FileKey, str]] = set()
_LOCK = threading.Lock()


def _file_key(path: Path) -> _FileKey:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _hash_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, as lowercase hex.

    Remembered in-process per (path, size, mtime, inode): hashing the same unchanged file
    again is free.
    """
    path = Path(path)
    try:
        key = _file_key(path)
        with _LOCK:
            known = _HASHES.get(key)
        if known is not None:
            return known
        digest = _hash_path(path)
    except OSError as exc:
        raise DataError(
            f"cannot read {path} to check its sha256: {exc.strerror or exc}",
            hint="check that the file exists and is readable",
        ) from exc
    with _LOCK:
        _HASHES[key] = digest
    return digest


def _remember_hash(path: Path, digest: str) -> None:
    with contextlib.suppress(OSError):
        key = _file_key(path)
        with _LOCK:
            _HASHES[key] = digest


# ----------------------------------------------------------------------------- locations


def default_cache_dir() -> Path:
    """``$GRADER_CACHE_DIR``, else ``$XDG_CACHE_HOME/grader``, else ``~/.cache/grader``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "grader"


def dataset_cache_path(spec: DatasetSpec, cache_dir: Path | None = None) -> Path:
    """Where the cache keeps this data set: ``<cache>/datasets/<filename>``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "datasets" / spec.filename


def _fix_hint(spec: DatasetSpec, cache_file: Path | None = None) -> str:
    ways = []
    if spec.env:
        ways.append(f"set {spec.env}=/path/to/{spec.filename} to use a copy you already have")
    else:
        ways.append(f"pass the path of a copy of {spec.filename} you already have")
    if spec.package and spec.package_resource:
        ways.append(
            f"install the Python package that provides the module {spec.package!r} "
            f"(it ships the file as {spec.package_resource})"
        )
    if cache_file is not None:
        ways.append(f"put a copy at {cache_file}")
    return "; or ".join(ways)


# ----------------------------------------------------------------------------- verification

_Verdict = Literal["ok", "mismatch", "invalid"]


def _describe(spec_sha: str | None, size: int | None) -> str:
    parts = []
    if spec_sha:
        parts.append(f"sha256 {spec_sha}")
    if size is not None:
        parts.append(f"{size} bytes")
    return ", ".join(parts) or "no known hash"


def _verify(
    path: Path, spec: DatasetSpec, validator: Validator | None, origin: str
) -> tuple[_Verdict, str]:
    """Check a file found on disk against the spec.

    ``ok``: the hash matches, or it differs but the validator accepted the file (then a
    DatasetHashWarning was emitted, once per process and file). ``mismatch``: it differs
    and there is no validator to judge it. ``invalid``: it differs and the validator
    rejected it. The message says what is wrong.
    """
    expected = spec.sha256.lower() if spec.sha256 else None
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {origin} {path}: {exc.strerror or exc}") from exc
    if spec.size is not None and size != spec.size:
        problem = f"is {size} bytes, not the {spec.size} bytes of the known file"
    else:
        if expected is None:
            return "ok", ""
        digest = sha256_file(path)
        if digest == expected:
            return "ok", ""
        problem = f"has sha256 {digest}, not the known {expected}"
    try:
        key = (_file_key(path), expected or "")
    except OSError as exc:
        raise DataError(f"cannot read {origin} {path}: {exc.strerror or exc}") from exc
    with _LOCK:
        if key in _ACCEPTED:
            return "ok", ""
    message = f"{origin} {path} {problem}"
    if validator is None:
        return "mismatch", message
    try:
        validator(path)
    except Exception as exc:
        return "invalid", f"{message}, and it failed structural validation: {exc}"
    with _LOCK:
        _ACCEPTED.add(key)
    warnings.warn(
        DatasetHashWarning(
            f"{message}; structural validation passed, so it is used. "
            "Results may differ from the reference if the data changed."
        ),
        stacklevel=3,
    )
    return "ok", ""


# ----------------------------------------------------------------------------- progress bar


class _Progress:
    """A one-line progress bar on stderr, redrawn at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        rate = f"{done / elapsed / 1e6:.1f} MB/s"
        if self.total:
            frac = min(done / self.total, 1.0)
            filled = int(frac * 30)
            bar = "#" * filled + "-" * (30 - filled)
            text = (
                f"{self.label} [{bar}] {frac * 100:3.0f}% "
                f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate}"
            )
        else:
            text = f"{self.label} {done / 1e6:.1f} MB {rate}"
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
            self.drawn = True

    def close(self, done: int, ok: bool) -> None:
        if not self.enabled:
            return
        if ok:
            self.update(done, force=True)
        if self.drawn:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\n" if ok else " (failed)\n")
                sys.stderr.flush()


def _want_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return bool(sys.stderr and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# ----------------------------------------------------------------------------- download


class _Retryable(Exception):
    """A failure worth another attempt: connection error, timeout, 5xx, truncated body."""


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body exactly as sent: a Content-Encoding (e.g. a .gz served as gzip) is not undone."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        yield from response.iter_content(CHUNK_SIZE)
        return
    try:
        yield from response.raw.stream(CHUNK_SIZE, decode_content=False)
    except urllib3.exceptions.HTTPError as exc:
        raise requests.exceptions.ConnectionError(str(exc)) from exc


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _fetch(
    session: requests.Session, url: str, dest: Path, timeout: float, show: bool
) -> tuple[Path, str, int]:
    """One attempt: stream ``url`` into a temporary file beside ``dest``.

    Returns (temporary file, sha256, bytes received). Leaves no temporary file behind on
    any failure. Raises _Retryable for failures worth another attempt, DataError otherwise.
    """
    try:
        response = session.get(
            url,
            stream=True,
            timeout=(timeout, timeout),
            headers={"Accept-Encoding": "identity"},
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise DataError(
            f"cannot download {url}: {type(exc).__name__}: {exc}",
            hint="check the URL in the data set spec",
        ) from exc
    with response:
        status = response.status_code
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status >= 400 or status < 200 or status >= 300:
            raise DataError(
                f"downloading {url} failed: HTTP {status} {response.reason}",
                hint="the URL may have moved; pass a copy of the file explicitly instead",
            )
        expected = _content_length(response)
        try:
            fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as exc:
            raise DataError(
                f"cannot write into {dest.parent}: {exc.strerror or exc}",
                hint=f"make the folder writable, or choose another cache with {CACHE_ENV}=/some/folder",
            ) from exc
        tmp = Path(name)
        digest = hashlib.sha256()
        received = 0
        bar = _Progress(f"downloading {dest.name}", expected, show)
        ok = False
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(response):
                    if not chunk:
                        continue
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(received)
                out.flush()
                os.fsync(out.fileno())
            if expected is not None and received != expected:
                # Content-Length counts the bytes as sent, which is what _chunks yields.
                raise _Retryable(f"transfer truncated: received {received} of {expected} bytes")
            ok = True
        except requests.RequestException as exc:
            _unlink(tmp)
            what = (
                "transfer truncated"
                if isinstance(exc, requests.exceptions.ChunkedEncodingError)
                else "connection lost"
            )
            of = f" of {expected}" if expected is not None else ""
            raise _Retryable(
                f"{what} ({received}{of} bytes saved; {type(exc).__name__}: {exc})"
            ) from exc
        except OSError as exc:
            _unlink(tmp)
            raise DataError(
                f"cannot write {tmp}: {exc.strerror or exc}",
                hint=f"free some disk space, or choose another cache with {CACHE_ENV}=/some/folder",
            ) from exc
        except BaseException:
            _unlink(tmp)
            raise
        finally:
            bar.close(received, ok)
    return tmp, digest.hexdigest(), received


def _finish(
    tmp: Path,
    dest: Path,
    *,
    url: str,
    digest: str,
    received: int,
    sha256: str | None,
    size: int | None,
    validator: Validator | None,
) -> None:
    """Verify a complete download and move it into place, or raise DataError."""
    expected = sha256.lower() if sha256 else None
    hash_ok = expected is None or digest == expected
    size_ok = size is None or received == size
    warn = None
    if hash_ok and size_ok:
        if expected is None and validator is not None:
            try:
                validator(tmp)
            except Exception as exc:
                raise DataError(
                    f"the file downloaded from {url} failed structural validation: {exc}; "
                    "nothing was kept",
                    hint="the URL may serve something else now; pass a copy of the file explicitly",
                ) from exc
    else:
        problem = (
            f"the file downloaded from {url} ({received} bytes, sha256 {digest}) differs "
            f"from the known file ({_describe(expected, size)})"
        )
        if validator is None:
            raise DataError(
                f"{problem}; nothing was kept",
                hint="the file at the URL changed or the download was corrupted; "
                "try again, or pass a known-good copy of the file explicitly",
            )
        try:
            validator(tmp)
        except Exception as exc:
            raise DataError(
                f"{problem}, and it failed structural validation: {exc}; nothing was kept",
                hint="the URL may serve something else now; pass a known-good copy of the file "
                "explicitly",
            ) from exc
        warn = (
            f"{problem}; structural validation passed, so it was kept at {dest}. "
            "Results may differ from the reference if the data changed."
        )
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(
            f"cannot move the download into place at {dest}: {exc.strerror or exc}",
            hint=f"make the folder writable, or choose another cache with {CACHE_ENV}=/some/folder",
        ) from exc
    _remember_hash(dest, digest)
    if warn is not None:
        with contextlib.suppress(OSError), _LOCK:
            _ACCEPTED.add((_file_key(dest), expected or ""))
        warnings.warn(DatasetHashWarning(warn), stacklevel=4)


def _download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    validator: Validator | None,
    session: requests.Session | None,
    timeout: float,
    retries: int,
    progress: bool | None,
) -> Path:
    dest = Path(dest).expanduser()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the folder {dest.parent} for the download of {url}: "
            f"{exc.strerror or exc}",
            hint=f"choose a writable cache with {CACHE_ENV}=/some/folder",
        ) from exc
    show = _want_progress(progress)
    own_session = session is None
    http = session if session is not None else requests.Session()
    attempts = max(int(retries), 0) + 1
    waited = 0.0
    failures: list[str] = []
    try:
        for attempt in range(attempts):
            try:
                tmp, digest, received = _fetch(http, url, dest, timeout, show)
            except _Retryable as exc:
                failures.append(str(exc))
                if attempt + 1 < attempts:
                    delay = min(BACKOFF_BASE * 2**attempt, BACKOFF_MAX, BACKOFF_TOTAL - waited)
                    if delay > 0:
                        time.sleep(delay)
                        waited += delay
                continue
            try:
                _finish(
                    tmp,
                    dest,
                    url=url,
                    digest=digest,
                    received=received,
                    sha256=sha256,
                    size=size,
                    validator=validator,
                )
            except BaseException:
                _unlink(tmp)
                raise
            return dest
    finally:
        if own_session:
            http.close()
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    raise DataError(
        f"downloading {url} failed after {tries}: {failures[-1]}",
        hint="check the network connection, or pass a copy of the file explicitly",
    )


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None,
    validator: Validator | None = None,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    The body is streamed in 1 MiB chunks into a temporary file beside ``dest`` and moved
    into place only once verified; on any failure (including KeyboardInterrupt) the
    temporary file is deleted and an existing ``dest`` is left untouched.

    Connection errors, timeouts (``timeout`` seconds to connect and between two reads),
    5xx answers and truncated bodies are retried up to ``retries`` times with exponential
    backoff; 4xx answers are not retried. A file whose sha256 (or size) differs from the
    known one is kept only if ``validator`` accepts it, with one DatasetHashWarning.
    A progress bar is drawn on stderr when ``progress`` is true (default: when stderr is
    a terminal).
    """
    return _download(
        url,
        dest,
        sha256=sha256,
        size=size,
        validator=validator,
        session=session,
        timeout=timeout,
        retries=retries,
        progress=progress,
    )


# ----------------------------------------------------------------------------- resolution


def _explicit_file(given: str | Path, spec: DatasetSpec, source: str) -> Path:
    path = Path(given).expanduser()
    if path.is_dir() and (path / spec.filename).is_file():
        path = path / spec.filename
    if not path.exists():
        raise DataError(
            f"the data set file {path} (from {source}) does not exist",
            hint=f"fix the path, or unset it to let the grader find {spec.filename} itself",
        )
    if not path.is_file():
        raise DataError(
            f"the data set path {path} (from {source}) is not a file",
            hint=f"give the path of {spec.filename} itself",
        )
    return path


def _package_file(spec: DatasetSpec, cache_file: Path) -> tuple[Path | None, str]:
    """The packaged copy of the file, or None and why not."""
    if not spec.package or not spec.package_resource:
        return None, "no package is configured"
    try:
        root = importlib.resources.files(spec.package)
    except ImportError:
        return None, f"the package {spec.package!r} is not installed"
    except Exception as exc:  # a broken package can raise anything on import
        return (
            None,
            f"the package {spec.package!r} could not be imported ({type(exc).__name__}: {exc})",
        )
    resource = root.joinpath(*[p for p in spec.package_resource.split("/") if p])
    where = f"{spec.package}/{spec.package_resource}"
    try:
        if not resource.is_file():
            return None, f"the installed package has no {where}"
        if isinstance(resource, Path):
            return resource, ""
        # Not a plain file (e.g. a zipped package): extract it into the cache.
        with importlib.resources.as_file(resource) as extracted:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".part"
            )
            os.close(fd)
            try:
                shutil.copyfile(extracted, name)
                os.replace(name, cache_file)
            except BaseException:
                _unlink(Path(name))
                raise
        return cache_file, ""
    except OSError as exc:
        return None, f"cannot read {where}: {exc.strerror or exc}"


def _move_aside(path: Path) -> Path | None:
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        return aside
    except OSError:
        try:
            os.unlink(path)
        except OSError as exc:
            raise DataError(
                f"the cached file {path} is corrupt and cannot be moved aside: "
                f"{exc.strerror or exc}",
                hint="delete it by hand",
            ) from exc
        return None


def resolve_dataset(
    spec: DatasetSpec,
    *,
    explicit: str | Path | None = None,
    cache_dir: Path | None = None,
    validator: Validator | None = None,
    download: bool = True,
    progress: bool | None = None,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> Path:
    """The path of a verified copy of the data set file; see the module docstring for the order.

    ``validator`` is a structural check (raising on a bad file); it decides whether a
    file whose hash differs from the known one may be used. With ``download=False``
    nothing is fetched and a file not found locally is a DataError.
    """
    cache_file = dataset_cache_path(spec, cache_dir)
    hint = _fix_hint(spec, cache_file)

    # 1. explicit path, else the environment variable
    given: str | Path | None = explicit if explicit not in (None, "") else None
    source = "the explicit path"
    if given is None and spec.env:
        value = os.environ.get(spec.env, "")
        if value:
            given, source = value, f"${spec.env}"
    if given is not None:
        path = _explicit_file(given, spec, source)
        verdict, message = _verify(path, spec, validator, f"the data set file (from {source})")
        if verdict == "invalid":
            raise DataError(message, hint=f"use an intact copy of {spec.filename}")
        if verdict == "mismatch":
            # The user chose this file: use it, but say that it is not the known one.
            with contextlib.suppress(OSError), _LOCK:
                _ACCEPTED.add((_file_key(path), spec.sha256.lower()))
            warnings.warn(
                DatasetHashWarning(f"{message}; using it as given (no structural validator)"),
                stacklevel=2,
            )
        return path

    tried: list[str] = []

    # 2. the user's cache
    if cache_file.is_file():
        verdict, message = _verify(cache_file, spec, validator, "the cached file")
        if verdict == "ok":
            return cache_file
        aside = _move_aside(cache_file)
        moved = f"moved it to {aside}" if aside else "deleted it"
        report = f"{message}; {moved}"
        warnings.warn(
            DatasetHashWarning(report + (" and downloading it again" if download else "")),
            stacklevel=2,
        )
        tried.append(report)
    else:
        tried.append(f"not in the cache ({cache_file})")

    # 3. the installed package
    packaged, why = _package_file(spec, cache_file)
    if packaged is not None:
        verdict, message = _verify(packaged, spec, validator, "the packaged file")
        if verdict == "ok":
            return packaged
        warnings.warn(DatasetHashWarning(f"{message}; ignoring it"), stacklevel=2)
        tried.append(message)
    else:
        tried.append(why)

    # 4. download into the cache
    if not download:
        raise DataError(
            f"{spec.filename} was not found ({'; '.join(tried)}) and downloading is disabled",
            hint=hint,
        )
    try:
        return _download(
            spec.url,
            cache_file,
            sha256=spec.sha256,
            size=spec.size,
            validator=validator,
            session=session,
            timeout=timeout,
            retries=retries,
            progress=progress,
        )
    except DataError as exc:
        raise DataError(
            f"{spec.filename} was not found locally ({'; '.join(tried)}) and {exc.message}",
            hint=f"{exc.hint}; or {hint}" if exc.hint else hint,
        ) from exc


# ----------------------------------------------------------------------------- staging


def stage_dataset(src: Path, workdir: Path, stage_as: str) -> Path:
    """Put a read-only copy of ``src`` at ``workdir/stage_as`` (parents created).

    A copy, never a hard link (student code that may write to its own folder must not be
    able to change the instructor's cached file) and never a symlink (which a sandbox may
    not resolve). The file appears atomically (temporary name, then rename); an existing
    file there is replaced.
    """
    src = Path(src)
    workdir = Path(workdir)
    target = workdir / stage_as
    if Path(stage_as).is_absolute() or not target.resolve().is_relative_to(workdir.resolve()):
        raise DataError(
            f"cannot stage the data set as {stage_as!r}: it is not a path inside the work folder",
            hint="stage_as must be a relative path such as data/file.gz",
        )
    if not src.is_file():
        raise DataError(
            f"cannot stage {src}: it is not a file",
            hint="resolve the data set first (resolve_dataset) and stage the path it returns",
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and os.path.samefile(src, target):
            return target
    except OSError as exc:
        raise DataError(
            f"cannot stage {src} as {target}: {exc.strerror or exc}",
            hint="check that the work folder is writable and the data set file readable",
        ) from exc
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(tmp)
        raise DataError(
            f"cannot stage {src} as {target}: {exc.strerror or exc}",
            hint="check that the work folder is writable and the data set file readable",
        ) from exc
    except BaseException:
        _unlink(tmp)
        raise
    return target
