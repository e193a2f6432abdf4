"""The data set kept on disk as arrays (grader/datacache.py), and ctx.data() reading it."""

import collections
import json
import time

import numpy as np
import pytest

from grader import checking
from grader.checking import CheckContext
from grader.datacache import KEEP, PREFIX, kept_data

KEY = {"data": "abc", "loader": "load", "reference": "r1", "numpy": "2"}


def _arrays():
    return (
        (np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3, dtype=np.int64)),
        [np.ones(2, dtype=np.uint8), np.zeros((2, 2), dtype=np.float64)],
    )


def _copies(folder):
    return [p for p in folder.glob(f"{PREFIX}*") if p.is_dir()]


class Loader:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def _same(a, b):
    assert type(a) is type(b)
    if isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert type(a) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b)


def test_arrays_are_kept_and_read_back_the_same(tmp_path):
    load = Loader(_arrays())
    first = kept_data(tmp_path, KEY, load)
    second = kept_data(tmp_path, KEY, load)
    assert load.calls == 1
    _same(first, _arrays())
    _same(second, _arrays())


def test_a_check_writing_into_the_data_changes_only_its_own_copy(tmp_path):
    kept_data(tmp_path, KEY, Loader(_arrays()))
    read = kept_data(tmp_path, KEY, Loader(None))
    read[0][0][0, 0] = 99.0
    again = kept_data(tmp_path, KEY, Loader(None))
    assert again[0][0][0, 0] == 0.0


Pair = collections.namedtuple("Pair", "x y")


@pytest.mark.parametrize(
    "value",
    [
        {"x": np.ones(3)},  # a dict: not arrays in tuples and lists
        (np.ones(3), "label"),
        (np.array([object()], dtype=object),),
        (np.ones(3), 5),
        (),
        Pair(np.ones(3), np.zeros(3)),  # would come back as a plain tuple
    ],
    ids=["dict", "string", "object-array", "number", "empty", "namedtuple"],
)
def test_anything_but_arrays_is_loaded_every_time(tmp_path, value):
    load = Loader(value)
    kept_data(tmp_path, KEY, load)
    assert kept_data(tmp_path, KEY, load) is value
    assert load.calls == 2
    assert not _copies(tmp_path)


def test_every_process_sees_the_same_layout(tmp_path):
    """The loader's own arrays may be views; the process that keeps them uses the copy it
    reads back, as every later process does."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    first = kept_data(tmp_path, KEY, Loader((base.T, base.T)))
    later = kept_data(tmp_path, KEY, Loader(None))
    for value in (first, later):
        assert np.array_equal(value[0], base.T) and value[0].base is not base
        assert value[0].strides == later[0].strides
        assert value[0] is not value[1]  # as any later process sees them


def test_a_cache_folder_that_cannot_be_written_still_loads(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    load = Loader(_arrays())
    _same(kept_data(blocker / "cache", KEY, load), _arrays())
    _same(kept_data(blocker / "cache", KEY, load), _arrays())
    assert load.calls == 2


def test_another_key_is_another_copy_and_a_damaged_copy_is_made_again(tmp_path):
    kept_data(tmp_path, KEY, Loader(_arrays()))
    other = Loader(((np.full(2, 7.0),),))
    _same(kept_data(tmp_path, {**KEY, "reference": "r2"}, other), ((np.full(2, 7.0),),))
    assert other.calls == 1
    (folder,) = [
        p for p in _copies(tmp_path) if json.loads((p / "index.json").read_text())["key"] == KEY
    ]
    (folder / "0.npy").write_bytes(b"not an array")
    load = Loader(_arrays())
    _same(kept_data(tmp_path, KEY, load), _arrays())
    assert load.calls == 1
    _same(kept_data(tmp_path, KEY, Loader(None)), _arrays())  # made again, readable


def _flip_a_bit(folder):
    data = bytearray((folder / "0.npy").read_bytes())
    data[-1] ^= 1
    (folder / "0.npy").write_bytes(bytes(data))


def _swap(folder):
    first, second = (folder / "0.npy").read_bytes(), (folder / "1.npy").read_bytes()
    (folder / "0.npy").write_bytes(second)
    (folder / "1.npy").write_bytes(first)


def _plant(folder):  # a valid array of the same shape and type, other values
    np.save(folder / "0.npy", np.arange(12, dtype=np.float32).reshape(3, 4)[::-1].copy())


def _npz(folder):
    np.savez(folder / "other.npz", np.arange(12, dtype=np.float32).reshape(3, 4))
    (folder / "other.npz").rename(folder / "0.npy")


DAMAGES = {
    "empty-array-file": lambda f: (f / "0.npy").write_bytes(b""),
    "index-not-utf8": lambda f: (f / "index.json").write_bytes(b"\xff\xfe{"),
    "index-nested-deep": lambda f: (f / "index.json").write_text("[" * 100_000 + "]" * 100_000),
    "index-not-json": lambda f: (f / "index.json").write_text("{"),
    "bit-flipped": _flip_a_bit,
    "files-swapped": _swap,
    "other-values": _plant,
    "npz-as-npy": _npz,
    "array-missing": lambda f: (f / "1.npy").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_kept_copy_changed_in_any_way_is_loaded_and_kept_again(tmp_path, damage):
    kept_data(tmp_path, KEY, Loader(_arrays()))
    (folder,) = _copies(tmp_path)
    damage(folder)
    load = Loader(_arrays())
    _same(kept_data(tmp_path, KEY, load), _arrays())
    assert load.calls == 1
    again = Loader(_arrays())
    _same(kept_data(tmp_path, KEY, again), _arrays())
    assert again.calls == 0  # kept again, whole


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: a.T[::2],
        lambda a: a.astype(">f8"),
        lambda a: np.array(a[0, 0]),
    ],
    ids=["strided", "fortran", "fortran-strided", "big-endian", "zero-d"],
)
def test_arrays_of_any_layout_are_read_back_without_loading_again(tmp_path, view):
    value = (view(np.arange(24, dtype=np.float32).reshape(4, 6)),)
    load = Loader(value)
    kept_data(tmp_path, KEY, load)
    again = kept_data(tmp_path, KEY, load)
    assert load.calls == 1
    assert np.array_equal(again[0], value[0]) and again[0].dtype == value[0].dtype


def test_only_the_most_recently_used_copies_are_kept(tmp_path):
    keys = [{**KEY, "reference": f"r{i}"} for i in range(KEEP + 2)]
    for key in keys:
        kept_data(tmp_path, key, Loader(((np.ones(2),),)))
        time.sleep(0.01)  # distinct modification times
    assert len(_copies(tmp_path)) == KEEP
    assert kept_data(tmp_path, keys[-1], Loader(None)) is not None  # the newest is there


def test_a_long_lived_process_loads_again_when_the_loader_changes(spec, tmp_path, monkeypatch):
    """A Dask worker keeps its process from one assignment bundle to the next: an edited
    loader (a new reference.py) must not be answered with the data the old one loaded."""
    monkeypatch.setattr(checking, "_DATA_CACHE", {})

    def data(reference_hash, value):
        ctx = CheckContext(spec, tmp_path / "data.bin", tmp_path / "cache")
        ctx._data_hash = "the same file"
        ctx._code_key = {"reference": reference_hash, "checks": "c", "torch": "t", "numpy": "n"}
        monkeypatch.setattr(ctx.reference, spec.dataset.loader, lambda path: value)
        return ctx.data()

    assert data("r1", (np.ones(2),))[0].tolist() == [1.0, 1.0]
    assert data("r2", (np.zeros(2),))[0].tolist() == [0.0, 0.0]
    assert data("r1", (np.full(2, 5.0),))[0].tolist() == [1.0, 1.0]  # r1's, not loaded again
    assert len(checking._DATA_CACHE) == checking.DATA_IN_PROCESS


@pytest.mark.slow
def test_ctx_data_reads_the_kept_mnist(spec, mnist_path, tmp_path, monkeypatch):
    monkeypatch.setattr(checking, "_DATA_CACHE", {})
    first = CheckContext(spec, mnist_path, tmp_path).data()
    monkeypatch.setattr(checking, "_DATA_CACHE", {})  # as in a new process
    ctx = CheckContext(spec, mnist_path, tmp_path)
    calls = []
    monkeypatch.setattr(ctx.reference, spec.dataset.loader, lambda path: calls.append(path))
    second = ctx.data()
    assert calls == []  # read back, not loaded
    _same(second, first)
    assert [len(part[0]) for part in second] == [50000, 10000, 10000]
