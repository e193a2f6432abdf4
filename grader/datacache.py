"""The data set as the reference's loader returns it, kept on disk in the form fastest to
read back.

Every grading process (each local worker, each Dask worker, the instructor's own) that runs
a check needing `ctx.data()` used to load the data set file again (decompress, unpickle):
seconds of CPU per process and batch for a data set of a few hundred MB. When the loader
returns arrays in plain tuples and lists, they are written once as `.npy` files beside the
reference cache and read back as plain arrays, at the disk's speed. Every process, the one
that wrote them too, uses what was read back, so all see arrays of the same layout.

The key is the data file's hash, the loader's name, the reference's source and numpy's
version. Anything else a loader returns (a dict, a named tuple, objects) is not kept. The
cache is an optimisation only: a folder that cannot be written or read means loading as
before, never a failed check. One process writes a copy (the others wait on its lock, then
read it); two copies (each as large as the loaded arrays) are kept per assignment, the most
recently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import locked

log = logging.getLogger(__name__)

FORMAT = 3  # 3: each array's shape, type and checksum in the index
KEEP = 2  # kept copies per assignment folder, the most recently used
PREFIX = "loaded-data-"  # a folder per copy, beside the cached reference results
SCRATCH = ".loaded-data-"  # a copy being written
SCRATCH_AGE = 3600  # seconds after which a scratch folder is a dead writer's, removed


class _Damaged(Exception):
    """A kept copy whose content is not what its index says."""


def _shape(value: Any, arrays: list[np.ndarray]) -> Any:
    """The nesting of `value` with each array replaced by its index in `arrays`; None when
    `value` is not numeric arrays in plain tuples and lists."""
    if type(value) is np.ndarray and value.dtype.kind in "biuf":
        arrays.append(value)
        return len(arrays) - 1
    if type(value) in (tuple, list):
        parts = [_shape(v, arrays) for v in value]
        if any(p is None for p in parts):
            return None
        return {"tuple" if type(value) is tuple else "list": parts}
    return None


def _build(shape: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(shape, int):
        return arrays[shape]
    if "tuple" in shape:
        return tuple(_build(s, arrays) for s in shape["tuple"])
    return [_build(s, arrays) for s in shape["list"]]


def _summary(array: np.ndarray) -> dict[str, Any]:
    """What a kept array must still be when read back: shape, type and a checksum."""
    # in the order np.save writes it (Fortran only for an array that is not also C-ordered)
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    flat = array.ravel(order="F") if fortran else array.ravel(order="C")  # a copy if strided
    data = flat.view(np.uint8).data
    return {"shape": list(array.shape), "dtype": array.dtype.str, "crc32": zlib.crc32(data)}


def _read(folder: Path, key_data: dict[str, Any]) -> Any:
    """The kept value, or None when there is none for exactly `key_data` or it cannot be read
    now (a missing folder, permissions, memory); raises _Damaged when its content is not what
    was written (any file changed, swapped, truncated or planted)."""
    try:
        raw = (folder / "index.json").read_bytes()
    except OSError:
        return None
    try:
        index = json.loads(raw.decode("utf-8"))
        if index.get("key") != key_data or index.get("format") != FORMAT:
            raise _Damaged("another key or format")
        arrays = []
        for i, expected in enumerate(index["arrays"]):
            file = folder / f"{i}.npy"
            try:
                with open(file, "rb") as handle:
                    array = np.lib.format.read_array(handle, allow_pickle=False)
            except (OSError, MemoryError) as exc:
                if not file.exists():
                    raise _Damaged(f"{i}.npy is missing") from exc
                return None  # unreadable now (permissions, no memory): loaded instead
            if _summary(array) != expected:
                raise _Damaged(f"{i}.npy is not the array that was kept")
            arrays.append(array)
        value = _build(index["shape"], arrays)
    except _Damaged:
        raise
    except MemoryError:
        return None
    except Exception as exc:  # whatever a changed file makes the readers raise
        raise _Damaged(f"{type(exc).__name__}: {exc}") from exc
    try:
        os.utime(folder / "index.json")  # used now: see _prune
    except OSError:
        pass
    return value


def _write(folder: Path, key_data: dict[str, Any], shape: Any, arrays: list[np.ndarray]) -> None:
    """Written (and synced) in a scratch folder, then renamed into place: a reader sees all
    of it or none. Raises OSError when it cannot be written."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH, dir=folder.parent))
    try:
        for i, array in enumerate(arrays):
            with open(scratch / f"{i}.npy", "wb") as handle:
                np.save(handle, array, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        summaries = [_summary(array) for array in arrays]
        index = {"format": FORMAT, "key": key_data, "shape": shape, "arrays": summaries}
        with open(scratch / "index.json", "w", encoding="utf-8") as handle:
            json.dump(index, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(scratch, 0o755)  # readable by whoever shares the cache, as the other entries
        os.rename(scratch, folder)
        descriptor = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _prune(parent: Path) -> None:
    """Remove all but the KEEP most recently used copies, and scratch folders of writers
    that died (the copies are read whole, so removing one never disturbs a reader)."""

    def used(folder: Path) -> float:
        try:
            return (folder / "index.json").stat().st_mtime
        except OSError:
            return 0.0

    kept = sorted((p for p in parent.glob(f"{PREFIX}*") if p.is_dir()), key=used, reverse=True)
    for old in kept[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    for scratch in parent.glob(f"{SCRATCH}*"):
        try:
            if time.time() - scratch.stat().st_mtime > SCRATCH_AGE:
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError:
            pass


def _kept_or_none(folder: Path, key_data: dict[str, Any]) -> Any:
    """The kept value, or None; a damaged copy is removed (and written again)."""
    try:
        return _read(folder, key_data)
    except _Damaged as exc:
        log.warning("the kept data set in %s is damaged (%s): loading it again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def kept_data(cache_dir: Path, key_data: dict[str, Any], load: Callable[[], Any]) -> Any:
    """`load()`'s value: read back from `cache_dir` when kept for exactly `key_data`, else
    loaded and (when it is arrays) kept there, then read back, for this and later processes."""
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_dir / f"{PREFIX}{key}"
    found = _kept_or_none(folder, key_data)
    if found is not None:
        return found
    with contextlib.ExitStack() as stack:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(cache_dir / f"{PREFIX}{key}.lock"))
        except OSError as exc:  # the cache folder cannot be written (read-only, full)
            log.warning("the data set cannot be kept in %s: %s", cache_dir, exc)
            return load()
        found = _kept_or_none(folder, key_data)  # another process kept it meanwhile
        if found is not None:
            return found
        value = load()
        arrays: list[np.ndarray] = []
        shape = _shape(value, arrays)
        if shape is None or not arrays:
            return value
        try:
            _write(folder, key_data, shape, arrays)
        except OSError as exc:
            log.warning("the data set could not be kept in %s: %s", cache_dir, exc)
            return value
        _prune(cache_dir)
        read = _kept_or_none(folder, key_data)
        return read if read is not None else value
