"""The data set as the reference's loader returns it, kept on disk in the form fastest to
read back.

Every grading process (each local worker, each Dask worker, the instructor's own) that runs
a check needing `ctx.data()` used to decompress and unpickle the data set: about 2.5 s of
CPU for MNIST, per process and batch. When the loader returns arrays (in nested tuples or
lists, as MNIST's does), they are written once as `.npy` files beside the reference cache
and mapped back copy-on-write: reading them costs nothing until a page is used, and a check
that writes into an array changes only its own copy.

The key is the data file's hash, the loader's name, the reference's source and numpy's
version; another loader result (not arrays) is simply not kept. A kept copy is as large as
the data loaded (220 MB for MNIST): the two most recently used are kept per assignment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
KEEP = 2  # kept copies per assignment folder, the most recently used
PREFIX = "loaded-data-"  # a folder per copy, beside the cached reference results


def _shape(value: Any, arrays: list[np.ndarray]) -> Any:
    """The nesting of `value` with each array replaced by its index in `arrays`; None when
    `value` is not arrays in tuples and lists."""
    if type(value) is np.ndarray and value.dtype.kind in "biuf" and not value.dtype.hasobject:
        arrays.append(value)
        return len(arrays) - 1
    if isinstance(value, tuple | list):
        parts = [_shape(v, arrays) for v in value]
        if any(p is None for p in parts):
            return None
        return {"tuple" if isinstance(value, tuple) else "list": parts}
    return None


def _build(shape: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(shape, int):
        return arrays[shape]
    if "tuple" in shape:
        return tuple(_build(s, arrays) for s in shape["tuple"])
    return [_build(s, arrays) for s in shape["list"]]


def _read(folder: Path, key_data: dict[str, Any]) -> Any:
    """The kept value, or None when there is none for exactly `key_data` (or it is damaged)."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        if index.get("key") != key_data or index.get("format") != FORMAT:
            return None
        os.utime(folder / "index.json")  # used now: see _prune
        arrays = [
            # copy-on-write: a check that writes into the data changes only its own copy
            np.asarray(np.load(folder / f"{i}.npy", mmap_mode="c", allow_pickle=False))
            for i in range(int(index["arrays"]))
        ]
        return _build(index["shape"], arrays)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _write(folder: Path, key_data: dict[str, Any], shape: Any, arrays: list[np.ndarray]) -> None:
    """Written in a scratch folder and renamed into place: a reader sees all of it or none;
    of two processes writing at once, the first rename wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".data-", dir=folder.parent))
    try:
        for i, array in enumerate(arrays):
            np.save(scratch / f"{i}.npy", array, allow_pickle=False)
        index = {"format": FORMAT, "key": key_data, "shape": shape, "arrays": len(arrays)}
        (scratch / "index.json").write_text(json.dumps(index), encoding="utf-8")
        os.rename(scratch, folder)
    except OSError:  # another process kept it first, or the disk is full: not kept
        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _prune(folder.parent)


def _prune(parent: Path) -> None:
    """Remove all but the KEEP most recently used copies (a process still reading a removed
    one keeps its mapping: the files go when it lets them go)."""

    def used(folder: Path) -> float:
        try:
            return (folder / "index.json").stat().st_mtime
        except OSError:
            return 0.0

    kept = sorted((p for p in parent.glob(f"{PREFIX}*") if p.is_dir()), key=used, reverse=True)
    for old in kept[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def kept_data(cache_dir: Path, key_data: dict[str, Any], load: Callable[[], Any]) -> Any:
    """`load()`'s value: read back from `cache_dir` when kept for exactly `key_data`, else
    loaded and (when it is arrays) kept there for the next process."""
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_dir / f"{PREFIX}{key}"
    found = _read(folder, key_data)
    if found is not None:
        return found
    if folder.exists():  # damaged, or of another format: made again
        shutil.rmtree(folder, ignore_errors=True)
    value = load()
    arrays: list[np.ndarray] = []
    shape = _shape(value, arrays)
    if shape is not None and arrays:
        _write(folder, key_data, shape, arrays)
    return value
