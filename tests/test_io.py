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
    key = cache_mod.cache_key(split, 8, 1)
    assert sorted(os.listdir(tmp_path)) == sorted([f"{key}.json", f"{key}.u8", f"{cache_mod._slot(split, 8, 1)}.slot.json"])
    again = cache_mod.decode_split(split, 8, 1, str(tmp_path), progress=False)  # read back from the cache
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(mine.images))
    assert again.images.shape == (5, 8, 8, 1) and again.ok.all()


def _faces(root, n: int = 3) -> None:
    """folder:<root> with classes happy and sad, n distinct 10x10 gray images each."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("happy", "sad"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(root / cls / f"{i}.png")


def _served_as_decoded(split, decoded) -> None:
    """Every cached item holds the pixels its file decodes to now."""
    for i in range(len(split)):
        np.testing.assert_array_equal(decoded.images[i], cache_mod.fit_image(split.load(i), 10, 1), err_msg=split.ids[i])


def test_cache_rebuilds_when_a_file_moves_between_classes(tmp_path, capsys):
    """After `mv happy/0.png sad/` the listing has the same name and count; a cache keyed on
    those served happy/1.png the pixels of happy/0.png."""
    from semifer.data.base import open_split

    root = tmp_path / "faces"
    _faces(root)
    first = open_split(f"folder:{root}")
    _served_as_decoded(first, cache_mod.decode_split(first, 10, 1, str(tmp_path / "c"), progress=False))
    os.rename(root / "happy" / "0.png", root / "sad" / "9.png")
    moved = open_split(f"folder:{root}")
    assert moved.name == first.name and len(moved) == len(first)
    _served_as_decoded(moved, cache_mod.decode_split(moved, 10, 1, str(tmp_path / "c"), progress=False))
    assert "rebuilding, item ids or labels changed" in capsys.readouterr().out
    assert len([f for f in os.listdir(tmp_path / "c") if f.endswith(".u8")]) == 1  # the stale one is gone


def test_cache_rebuilds_when_an_image_is_edited_in_place(tmp_path, capsys):
    from PIL import Image

    from semifer.data.base import open_split

    root = tmp_path / "faces"
    _faces(root)
    split = open_split(f"folder:{root}")
    cache_mod.decode_split(split, 10, 1, str(tmp_path / "c"), progress=False)
    Image.fromarray(np.full((10, 10), 7, dtype=np.uint8)).save(root / "sad" / "1.png")
    st = os.stat(root / "sad" / "1.png")
    os.utime(root / "sad" / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    again = cache_mod.decode_split(split, 10, 1, str(tmp_path / "c"), progress=False)
    _served_as_decoded(split, again)
    assert (np.asarray(again.images[split.ids.index("sad/1.png")]) == 7).all()
    assert "rebuilding, image files changed on disk" in capsys.readouterr().out
