"""grader.data: resolution order, verified downloads from a real local HTTP server, staging.

No test touches the internet: every URL points at a ThreadingHTTPServer on 127.0.0.1
(or at a closed local port). Nothing is written into the source tree.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import importlib.util
import json
import os
import pickle
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from grader import data
from grader.data import (
    DatasetHashWarning,
    dataset_cache_path,
    default_cache_dir,
    download_file,
    resolve_dataset,
    sha256_file,
    stage_dataset,
)
from grader.errors import DataError
from grader.spec import DatasetSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "solutions" / "mnist_nn" / "reference.py"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_SIZE = 17051982


# ----------------------------------------------------------------------------- small files


def toy(value: int, kind: str = "toy", mtime: float = 0) -> bytes:
    """A small gzip'd JSON file; the same `value` always gives the same bytes."""
    body = json.dumps({"kind": kind, "value": value}).encode()
    return gzip.compress(body, mtime=mtime)


def toy_validator(path: Path) -> None:
    """The structural check of the toy format: gzip'd JSON with kind == 'toy'."""
    try:
        content = json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a gzip'd JSON file ({exc})") from exc
    if not isinstance(content, dict) or content.get("kind") != "toy":
        raise ValueError(f"{path}: not a toy data set")


GOOD = toy(1)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
OTHER_VALID = toy(1, mtime=12345)  # same content, other gzip header: other hash, still valid
WRONG_CONTENT = toy(1, kind="something else")
NOT_GZIP = b"<html>not the data set</html>\n" * 10


def toy_spec(url: str, **changes: Any) -> DatasetSpec:
    spec = DatasetSpec(
        filename="toy.json.gz",
        url=url,
        sha256=GOOD_SHA,
        size=len(GOOD),
        env="TOY_DATA_PATH",
    )
    return dataclasses.replace(spec, **changes)


def leftovers(folder: Path, keep: set[str] | None = None) -> list[str]:
    """Names in `folder` other than `keep`: after a failure there must be none."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in (keep or set()))


# ----------------------------------------------------------------------------- HTTP server

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def serve(body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    return behaviour


def serve_without_length(body: bytes) -> Behaviour:
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()  # HTTP/1.0: the body ends when the connection closes
        h.wfile.write(body)

    return behaviour


def truncated(body: bytes) -> Behaviour:
    """Claims the whole length, sends half, closes the connection."""

    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True

    return behaviour


def status(code: int) -> Behaviour:
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_error(code)

    return behaviour


def slow(delay: float, body: bytes) -> Behaviour:
    def behaviour(h: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        serve(body)(h)

    return behaviour


def stalls(delay: float, body: bytes) -> Behaviour:
    """Sends the headers and half the body, then stops sending for `delay` seconds."""

    def behaviour(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        time.sleep(delay)
        h.wfile.write(body[len(body) // 2 :])

    return behaviour


def sequence(*steps: Behaviour) -> Behaviour:
    """Step i for the i-th request; the last step repeats."""
    lock = threading.Lock()
    count = [0]

    def behaviour(h: BaseHTTPRequestHandler) -> None:
        with lock:
            index = min(count[0], len(steps) - 1)
            count[0] += 1
        steps[index](h)

    return behaviour


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                behaviour = routes.get(self.path, status(404))
                behaviour(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout) makes the handler's writes fail

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private cache, no data set variables from the outside."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADER_CACHE_DIR", str(cache))
    for name in ("TOY_DATA_PATH", "MNIST_PATH", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture
def dead_url() -> str:
    """A URL on a local port nobody listens on: connecting fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing"


@pytest.fixture(scope="session")
def mnist_file() -> Path:
    resource = importlib.resources.files("mnist") / "data/mnist.pkl.gz"
    assert isinstance(resource, Path) and resource.is_file()
    return resource


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An importable package, unique to this test, that ships data/toy.json.gz."""
    name = f"toypkg_{uuid.uuid4().hex[:12]}"
    root = tmp_path / "site" / name
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "data" / "toy.json.gz").write_bytes(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return name, root / "data" / "toy.json.gz"


# ----------------------------------------------------------------------------- module basics


def test_module_is_generic() -> None:
    source = Path(data.__file__).read_text(encoding="utf-8").lower()
    assert "mnist" not in source


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(GOOD)
    assert sha256_file(path) == GOOD_SHA
    with pytest.raises(DataError, match="cannot read"):
        sha256_file(tmp_path / "absent")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADER_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("GRADER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "grader"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "grader"
    spec = toy_spec("http://unused")
    assert dataset_cache_path(spec, tmp_path / "c") == tmp_path / "c" / "datasets" / "toy.json.gz"


# ----------------------------------------------------------------------------- download

# (behaviour of the server, progress bar, how many requests it must see)
SUCCEEDS = {
    "plain": (serve(GOOD), False, 1),
    "plain, progress bar": (serve(GOOD), True, 1),
    "no Content-Length, progress bar": (serve_without_length(GOOD), True, 1),
    # A .gz served with Content-Encoding: gzip is saved as sent, not decompressed.
    "Content-Encoding gzip kept verbatim": (serve(GOOD, {"Content-Encoding": "gzip"}), False, 1),
    "truncated, then complete": (sequence(truncated(GOOD), serve(GOOD)), False, 2),
    "500, 503, then 200": (sequence(status(500), status(503), serve(GOOD)), False, 3),
}


@pytest.mark.parametrize("case", SUCCEEDS, ids=list(SUCCEEDS))
def test_download_succeeds(
    case: str, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    behaviour, progress, hits = SUCCEEDS[case]
    server.routes["/toy"] = behaviour
    dest = tmp_path / "out" / "toy.json.gz"
    got = download_file(server.url("/toy"), dest, toy_spec("unused"), progress=progress)
    assert got == dest and dest.read_bytes() == GOOD
    assert server.hits["/toy"] == hits
    assert leftovers(dest.parent, {"toy.json.gz"}) == []
    err = capsys.readouterr().err
    assert ("B/s" in err) if progress else (err == "")  # tqdm's bar shows the rate


@dataclasses.dataclass
class Failure:
    server: Behaviour
    words: list[str]  # each must be in the DataError's message
    hits: int = 1  # requests the server sees: 1 where another attempt is not worth it
    retries: int = 3
    timeout: float = 30
    validator: Callable[[Path], None] | None = None
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)  # changes to toy_spec


STALLED = os.urandom(3 * 1024 * 1024)
FAILS = {
    "404 is final": Failure(status(404), ["HTTP 404", "/toy"]),
    "500 forever": Failure(status(500), ["500 Server Error", "after 2 attempts"], 2, retries=1),
    "truncated": Failure(truncated(GOOD), ["transfer truncated", "after 2 attempts"], 2, retries=1),
    "headers too slow": Failure(
        slow(2.0, GOOD), ["timed out", "after 2 attempts"], 2, retries=1, timeout=0.5
    ),
    "stall mid-body": Failure(
        stalls(2.0, STALLED),
        ["timed out", "after 1 attempt:"],
        retries=0,
        timeout=0.3,
        spec={"sha256": hashlib.sha256(STALLED).hexdigest(), "size": len(STALLED)},
    ),
    "not gzip": Failure(
        serve(NOT_GZIP),
        ["failed structural validation", "not a gzip", "nothing was kept"],
        validator=toy_validator,
    ),
    "wrong content": Failure(
        serve(WRONG_CONTENT),
        ["not a toy data set", "nothing was kept"],
        validator=toy_validator,
        spec={"size": None},  # so that the hash is checked, not only the size
    ),
    "other hash, no validator": Failure(
        serve(OTHER_VALID), ["not the known", GOOD_SHA, "nothing was kept"], spec={"size": None}
    ),
    "other size, no validator": Failure(serve(GOOD + b"x"), [f"not the {len(GOOD)} bytes"]),
}


@pytest.mark.parametrize("case", FAILS, ids=list(FAILS))
def test_download_fails_and_keeps_nothing(case: str, server: Server, tmp_path: Path) -> None:
    """A clear DataError; retried only when worth it; the previous file and folder untouched."""
    failure = FAILS[case]
    server.routes["/toy"] = failure.server
    dest = tmp_path / "t.gz"
    dest.write_bytes(b"previous")
    with pytest.raises(DataError) as info:
        download_file(
            server.url("/toy"),
            dest,
            toy_spec("unused", **failure.spec),
            validator=failure.validator,
            timeout=failure.timeout,
            retries=failure.retries,
        )
    for word in failure.words:
        assert word in info.value.message
    assert info.value.hint and "explicitly" in info.value.hint
    assert server.hits["/toy"] == failure.hits
    assert dest.read_bytes() == b"previous"
    assert leftovers(tmp_path, {"t.gz"}) == []


def test_connection_refused_is_retried_then_fails(dead_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "t.gz"
    with pytest.raises(DataError, match="ConnectionError") as info:
        download_file(dead_url, dest, toy_spec(dead_url), retries=1, progress=False)
    assert dead_url in info.value.message and "after 2 attempts" in info.value.message
    assert leftovers(dest.parent) == []


def test_invalid_url_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot download"):
        download_file("nothttp://x/y", tmp_path / "t", toy_spec("nothttp://x/y"))
    assert leftovers(tmp_path) == []


def test_unwritable_destination_is_data_error(server: Server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    server.routes["/toy"] = serve(GOOD)
    with pytest.raises(DataError, match="cannot write the download") as info:
        download_file(server.url("/toy"), blocker / "t.gz", toy_spec("unused"))
    assert info.value.hint and "GRADER_CACHE_DIR=" in info.value.hint


def test_valid_file_with_other_hash_is_kept_with_one_warning(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/toy"] = serve(OTHER_VALID)
    dest = tmp_path / "t.gz"
    with pytest.warns(DatasetHashWarning) as record:
        download_file(server.url("/toy"), dest, toy_spec("unused"), validator=toy_validator)
    assert len(record) == 1
    text = str(record[0].message)
    assert "not the known" in text and "structural validation passed" in text
    assert dest.read_bytes() == OTHER_VALID
    assert leftovers(tmp_path, {"t.gz"}) == []


def test_keyboard_interrupt_while_streaming_leaves_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = requests.Response.iter_content

    def interrupted(self: requests.Response, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in real(self, *args, **kwargs):
            yield chunk
            raise KeyboardInterrupt

    monkeypatch.setattr(requests.Response, "iter_content", interrupted)
    server.routes["/toy"] = serve(GOOD)
    dest = tmp_path / "out" / "t.gz"
    with pytest.raises(KeyboardInterrupt):
        download_file(server.url("/toy"), dest, toy_spec("unused"), progress=True)
    assert leftovers(dest.parent) == []


def test_keyboard_interrupt_while_validating_leaves_nothing(server: Server, tmp_path: Path) -> None:
    def interrupting(path: Path) -> None:
        raise KeyboardInterrupt

    server.routes["/toy"] = serve(OTHER_VALID)
    dest = tmp_path / "out" / "t.gz"
    with pytest.raises(KeyboardInterrupt):
        download_file(server.url("/toy"), dest, toy_spec("unused"), validator=interrupting)
    assert leftovers(dest.parent) == []


# ----------------------------------------------------------------------------- resolution


def test_resolution_order(
    server: Server,
    tmp_path: Path,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    toy_package: tuple[str, Path],
) -> None:
    """explicit path > env var > cache > package > download."""
    package, packaged = toy_package
    server.routes["/toy"] = serve(GOOD)
    spec = toy_spec(server.url("/toy"), package=package, package_resource="data/toy.json.gz")
    explicit = tmp_path / "explicit.gz"
    from_env = tmp_path / "env.gz"
    cached = isolated / "datasets" / "toy.json.gz"
    for path in (explicit, from_env, cached):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(GOOD)
    monkeypatch.setenv("TOY_DATA_PATH", str(from_env))

    assert resolve_dataset(spec, explicit=explicit) == explicit
    assert resolve_dataset(spec, explicit=str(explicit)) == explicit
    assert resolve_dataset(spec) == from_env
    monkeypatch.delenv("TOY_DATA_PATH")
    assert resolve_dataset(spec) == cached
    cached.unlink()
    assert resolve_dataset(spec) == packaged
    assert not cached.exists()  # the packaged file is used in place, not copied
    assert "/toy" not in server.hits
    packaged.unlink()
    assert resolve_dataset(spec, progress=False) == cached
    assert cached.read_bytes() == GOOD and server.hits["/toy"] == 1
    assert resolve_dataset(spec) == cached  # now found in the cache
    assert server.hits["/toy"] == 1


def test_cache_dir_argument_beats_environment(server: Server, tmp_path: Path) -> None:
    server.routes["/toy"] = serve(GOOD)
    spec = toy_spec(server.url("/toy"))
    got = resolve_dataset(spec, cache_dir=tmp_path / "mine", progress=False)
    assert got == tmp_path / "mine" / "datasets" / "toy.json.gz"


def test_missing_explicit_path_is_an_error(isolated: Path, tmp_path: Path) -> None:
    cached = isolated / "datasets" / "toy.json.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(GOOD)  # would be found, but an explicit path must not fall through
    spec = toy_spec("http://127.0.0.1:9/never")
    with pytest.raises(DataError, match="does not exist") as info:
        resolve_dataset(spec, explicit=tmp_path / "typo.gz")
    assert "typo.gz" in info.value.message and "explicit" in info.value.message


def test_missing_env_path_is_an_error(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_DATA_PATH", str(tmp_path / "typo.gz"))
    with pytest.raises(DataError, match=r"\$TOY_DATA_PATH"):
        resolve_dataset(toy_spec("http://127.0.0.1:9/never"))


def test_explicit_folder_holding_the_file(tmp_path: Path) -> None:
    (tmp_path / "toy.json.gz").write_bytes(GOOD)
    assert resolve_dataset(toy_spec("http://unused"), explicit=tmp_path) == tmp_path / "toy.json.gz"


def test_explicit_file_rejected_by_validator(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(WRONG_CONTENT)
    with pytest.raises(DataError, match="failed structural validation"):
        resolve_dataset(toy_spec("http://unused"), explicit=bad, validator=toy_validator)


def test_explicit_file_with_other_hash_and_validator_warns(tmp_path: Path) -> None:
    other = tmp_path / "other.gz"
    other.write_bytes(OTHER_VALID)
    spec = toy_spec("http://unused")
    with pytest.warns(DatasetHashWarning, match="structural validation passed"):
        assert resolve_dataset(spec, explicit=other, validator=toy_validator) == other


def test_explicit_file_with_other_hash_and_no_validator_warns(tmp_path: Path) -> None:
    other = tmp_path / "other.gz"
    other.write_bytes(OTHER_VALID)
    with pytest.warns(DatasetHashWarning, match="using it as given"):
        assert resolve_dataset(toy_spec("http://unused"), explicit=other) == other


def test_corrupt_cached_file_is_moved_aside_and_downloaded_again(
    server: Server, isolated: Path
) -> None:
    server.routes["/toy"] = serve(GOOD)
    spec = toy_spec(server.url("/toy"))
    cached = isolated / "datasets" / "toy.json.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(WRONG_CONTENT)
    with pytest.warns(DatasetHashWarning, match="moved it to .*corrupt"):
        got = resolve_dataset(spec, validator=toy_validator, progress=False)
    assert got == cached and cached.read_bytes() == GOOD
    assert (cached.parent / "toy.json.gz.corrupt").read_bytes() == WRONG_CONTENT
    assert server.hits["/toy"] == 1
    assert leftovers(cached.parent, {"toy.json.gz", "toy.json.gz.corrupt"}) == []


def test_cached_valid_file_with_other_hash_is_used_with_a_warning(
    server: Server, isolated: Path
) -> None:
    """As kept by an earlier download: validated and reported, not fetched again."""
    server.routes["/toy"] = serve(OTHER_VALID)
    spec = toy_spec(server.url("/toy"))
    cached = isolated / "datasets" / "toy.json.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(OTHER_VALID)
    with pytest.warns(DatasetHashWarning, match="cached file .* structural validation passed"):
        assert resolve_dataset(spec, validator=toy_validator) == cached
    assert "/toy" not in server.hits


def test_cached_file_with_wrong_size_is_downloaded_again(server: Server, isolated: Path) -> None:
    server.routes["/toy"] = serve(GOOD)
    spec = toy_spec(server.url("/toy"))
    cached = isolated / "datasets" / "toy.json.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(GOOD + b"extra")
    with pytest.warns(DatasetHashWarning, match=f"is {len(GOOD) + 5} bytes, not the"):
        assert resolve_dataset(spec, progress=False) == cached
    assert cached.read_bytes() == GOOD and server.hits["/toy"] == 1


def test_nothing_found_and_download_disabled(isolated: Path) -> None:
    spec = toy_spec("http://unused", package="no_such_package_xyz", package_resource="d/t.gz")
    with pytest.raises(DataError, match="downloading is disabled") as info:
        resolve_dataset(spec, download=False)
    assert "not installed" in info.value.message
    assert info.value.hint and "TOY_DATA_PATH=/path/to/toy.json.gz" in info.value.hint
    assert "no_such_package_xyz" in info.value.hint


def test_failed_download_says_what_was_tried(server: Server, isolated: Path) -> None:
    spec = toy_spec(server.url("/missing"))
    with pytest.raises(DataError) as info:
        resolve_dataset(spec, progress=False)
    message, hint = info.value.message, info.value.hint or ""
    assert "404" in message and server.url("/missing") in message and "not in the cache" in message
    assert "TOY_DATA_PATH=" in hint
    assert leftovers(isolated / "datasets") == []


def test_packaged_file_with_bad_hash_is_skipped(
    server: Server, isolated: Path, toy_package: tuple[str, Path]
) -> None:
    package, packaged = toy_package
    packaged.write_bytes(WRONG_CONTENT)
    server.routes["/toy"] = serve(GOOD)
    spec = toy_spec(server.url("/toy"), package=package, package_resource="data/toy.json.gz")
    with pytest.warns(DatasetHashWarning, match="packaged file .* ignoring it"):
        got = resolve_dataset(spec, validator=toy_validator, progress=False)
    assert got == isolated / "datasets" / "toy.json.gz" and got.read_bytes() == GOOD
    assert packaged.read_bytes() == WRONG_CONTENT  # never modified


# ----------------------------------------------------------------------------- staging


def test_stage_dataset_copies_read_only(tmp_path: Path) -> None:
    src = tmp_path / "src.gz"
    src.write_bytes(GOOD)
    work = tmp_path / "work"
    staged = stage_dataset(src, work, "data/deep/toy.json.gz")
    assert staged == work / "data" / "deep" / "toy.json.gz"
    assert staged.read_bytes() == GOOD
    assert not staged.is_symlink() and not os.path.samefile(src, staged)
    assert staged.stat().st_mode & 0o777 == 0o444
    assert stage_dataset(src, work, "data/deep/toy.json.gz") == staged  # idempotent
    assert leftovers(staged.parent, {"toy.json.gz"}) == []
    # Student code owns its folder and may make the copy writable: the source stays as it was.
    os.chmod(staged, 0o644)
    staged.write_bytes(b"changed by a student")
    assert src.read_bytes() == GOOD


def test_stage_dataset_replaces_a_stale_file(tmp_path: Path) -> None:
    src = tmp_path / "src.gz"
    src.write_bytes(GOOD)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "toy.json.gz").write_bytes(b"stale")
    staged = stage_dataset(src, work, "data/toy.json.gz")
    assert staged.read_bytes() == GOOD
    assert src.read_bytes() == GOOD
    assert leftovers(staged.parent, {"toy.json.gz"}) == []


def test_stage_dataset_refuses_paths_outside_workdir(tmp_path: Path) -> None:
    src = tmp_path / "src.gz"
    src.write_bytes(GOOD)
    for bad in ("../escape.gz", str(tmp_path / "abs.gz")):
        with pytest.raises(DataError, match="not a path inside"):
            stage_dataset(src, tmp_path / "work", bad)


def test_stage_missing_source_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        stage_dataset(tmp_path / "absent", tmp_path / "work", "d/x")
    assert leftovers(tmp_path / "work" / "d") == []


# ----------------------------------------------------------------------------- the MNIST file


def load_reference_validator(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} does not exist yet (another helper is writing it)")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in the source tree
    module_spec = importlib.util.spec_from_file_location("_test_data_reference", REFERENCE)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    validator: Callable[[Path], None] = module.validate_dataset
    return validator


def mnist_spec(url: str) -> DatasetSpec:
    spec = load_spec(REPO / "solutions" / "mnist_nn").dataset
    assert spec is not None
    assert (spec.sha256, spec.size) == (MNIST_SHA256, MNIST_SIZE)
    return dataclasses.replace(spec, url=url)


def test_mnist_resolves_to_the_installed_package(dead_url: str, mnist_file: Path) -> None:
    got = resolve_dataset(mnist_spec(dead_url), download=False)
    assert got == mnist_file and sha256_file(got) == MNIST_SHA256


@pytest.mark.slow
def test_mnist_download_verified_by_reference_validator(
    server: Server, isolated: Path, mnist_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validate = load_reference_validator(monkeypatch)
    server.routes["/mnist.pkl.gz"] = serve(mnist_file.read_bytes())
    spec = dataclasses.replace(mnist_spec(server.url("/mnist.pkl.gz")), package=None)
    got = resolve_dataset(spec, validator=validate, progress=False)
    assert got == isolated / "datasets" / "mnist.pkl.gz"
    assert sha256_file(got) == MNIST_SHA256 and got.stat().st_size == MNIST_SIZE
    validate(got)
    staged = stage_dataset(got, isolated.parent / "work", spec.stage_as or "mnist.pkl.gz")
    assert sha256_file(staged) == MNIST_SHA256


@pytest.mark.slow
def test_mnist_with_other_hash_kept_and_wrong_pickle_rejected(
    server: Server, isolated: Path, mnist_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validate = load_reference_validator(monkeypatch)
    # Same data, another gzip header time stamp: a different file that is still valid.
    body = bytearray(mnist_file.read_bytes())
    body[4:8] = (1234567890).to_bytes(4, "little")
    server.routes["/regzipped"] = serve(bytes(body))
    spec = dataclasses.replace(mnist_spec(server.url("/regzipped")), package=None)
    with pytest.warns(DatasetHashWarning) as record:
        got = resolve_dataset(spec, validator=validate, progress=False)
    assert len(record) == 1 and "structural validation passed" in str(record[0].message)
    assert got.read_bytes() == bytes(body)

    wrong = gzip.compress(pickle.dumps({"not": "the data set"}), mtime=0)
    server.routes["/wrong"] = serve(wrong)
    dest = isolated / "other" / "mnist.pkl.gz"
    with pytest.raises(DataError, match="failed structural validation"):
        download_file(server.url("/wrong"), dest, spec, validator=validate, progress=False)
    assert leftovers(dest.parent) == []
