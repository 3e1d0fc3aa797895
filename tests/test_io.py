"""Atomic writes when several writers target one file (two runs building one decode cache)."""
import os

import numpy as np
import pytest

from semifer.data import cache as cache_mod
from semifer.data.base import Split
from semifer.io import atomic_path


def test_interleaved_writers_both_succeed(tmp_path):
    target = tmp_path / "x.json"
    with atomic_path(str(target)) as tmp_a:
        open(tmp_a, "w").write("a")
        with atomic_path(str(target)) as tmp_b:  # a second writer finishes inside the first
            assert tmp_b != tmp_a
            open(tmp_b, "w").write("b")
        assert target.read_text() == "b"
    assert target.read_text() == "a"          # the last rename wins
    assert os.listdir(tmp_path) == ["x.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "grid.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(str(target)) as tmp:
        assert tmp.endswith(".png")            # writers such as cv2.imwrite pick the format from it
        open(tmp, "w").write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["grid.png"]


def _split(n: int = 5) -> Split:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8)
    return Split(name="toy", classes=("a", "b"), ids=[f"{i}.png" for i in range(n)],
                 labels=np.arange(n) % 2, load=lambda i: pixels[i], grayscale=True)


def test_concurrent_cache_builds(tmp_path, monkeypatch):
    """A second process building the same cache while the first decodes: the first run of the
    FER2013 benchmark died here with "No such file: <key>.json.tmp" before writers had their own
    temporary names."""
    split, decode = _split(), cache_mod._decode_into
    other = {}

    def first_decode(*args, **kw):
        monkeypatch.setattr(cache_mod, "_decode_into", decode)
        other["decoded"] = cache_mod.decode_split(split, 8, 1, str(tmp_path), progress=False)  # the other run
        return decode(*args, **kw)

    monkeypatch.setattr(cache_mod, "_decode_into", first_decode)
    mine = cache_mod.decode_split(split, 8, 1, str(tmp_path), progress=False)
    np.testing.assert_array_equal(np.asarray(mine.images), np.asarray(other["decoded"].images))
    assert sorted(os.listdir(tmp_path)) == sorted(f"{cache_mod.cache_key(split, 8, 1)}{e}" for e in (".json", ".u8"))
    again = cache_mod.decode_split(split, 8, 1, str(tmp_path), progress=False)  # read back from the cache
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(mine.images))
    assert again.images.shape == (5, 8, 8, 1) and again.ok.all()
