"""The MAE pre-training pool: several dataset specs and image folders read as one unlabelled set."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from semifer.data.base import DataError
from semifer.data.pool import open_pool, parse_sources, report_lines
from semifer.ssl import pretrain as pre


@pytest.fixture
def sources(tmp_path, noise_folder):
    """A labelled folder dataset (train and test: 12 images each) and an unlabelled folder of 3
    images in a nested sub-folder, beside a text file that must be skipped."""
    root = noise_folder(20)
    faces = tmp_path / "unlabelled" / "casia" / "0001"
    faces.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((30, 30), 80 * i, np.uint8)).save(faces / f"{i}.jpg")
    (tmp_path / "unlabelled" / "README.txt").write_text("not an image")
    return root, tmp_path / "unlabelled"


def test_pool_counts_each_source_and_reads_its_own_split(tmp_path, sources):
    root, unlabelled = sources
    specs = [f"folder:{root}", f"folder:{root}?split=test", f"images:{unlabelled}"]
    pool = open_pool(specs, "train", 16, 1, str(tmp_path / "cache"))
    assert pool.report() == [
        {"source": specs[0], "split": "train", "images": 12, "unreadable": 0},
        {"source": specs[1], "split": "test", "images": 12, "unreadable": 0},
        {"source": specs[2], "split": "", "images": 3, "unreadable": 0},
    ]
    assert len(pool) == 27 and pool.channels == 1 and list(pool.offsets) == [0, 12, 24]
    # pool index 24 + i is the unlabelled folder's i-th image (sorted), whose pixels are 80 * i
    batch = pool.gather(np.array([26, 0, 24, 25]))
    assert batch.shape == (4, 16, 16, 1) and [int(b.max()) for b in batch[[0, 2, 3]]] == [160, 0, 80]
    assert report_lines(pool.report()) == [f"  {specs[0]} [train]: 12 images (44.4 %)",
                                           f"  {specs[1]} [test]: 12 images (44.4 %)",
                                           f"  {specs[2]}: 3 images (11.1 %)"]


def test_sources_from_a_yaml_list_or_a_comma_string_are_the_same(tmp_path, sources):
    root, unlabelled = sources
    recipe = tmp_path / "pre.yaml"
    recipe.write_text(f"data:\n  sources:\n    - folder:{root}?split=test\n    - images:{unlabelled}\n")
    from_list = pre.load_pretrain_config(str(recipe), [f"data.cache_dir={tmp_path / 'cache'}", "data.size=16"])
    from_string = pre.load_pretrain_config(None, [f"data.sources=folder:{root}?split=test,images:{unlabelled}",
                                                  f"data.cache_dir={tmp_path / 'cache'}", "data.size=16"])
    assert from_list.data.sources == [f"folder:{root}?split=test", f"images:{unlabelled}"]
    assert isinstance(from_string.data.sources, str)
    assert pre.open_sources(from_list.data)[1] == pre.open_sources(from_string.data)[1]
    assert parse_sources(" a:/x , ,b:/y ") == parse_sources(["a:/x", "b:/y"]) == ["a:/x", "b:/y"]


def test_a_bad_source_is_an_error_that_names_it(tmp_path, sources):
    root, unlabelled = sources
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    cases = [
        ([f"images:{unlabelled}", f"images:{tmp_path / 'missing'}"], r"source 'images:.*missing': .*not a folder"),
        ([f"images:{empty}"], r"source 'images:.*empty': .*no image files"),
        ([f"images:{broken}"], r"source 'images:.*broken': none of its 1 images could be decoded"),
        ([f"folder:{root}", f"folder:{root}"], r"source 'folder:.*' is listed twice"),
        ([f"rafdbb:{root}"], r"source 'rafdbb:.*': unknown dataset 'rafdbb'"),
        ([f"folder:{root}?split=val"], r"source 'folder:.*split=val': "),
        ([f"folder:{unlabelled}"], r"an unlabelled folder is images:/path"),
        ([], r"no pre-training sources"),
    ]
    for specs, match in cases:
        with pytest.raises(DataError, match=match):
            open_pool(specs, "train", 16, 1, str(tmp_path / "cache"))


def test_pretrain_logs_and_records_every_source_and_runs_in_epochs(tmp_path, sources, capsys):
    root, unlabelled = sources
    cfg = pre.load_pretrain_config(None, [
        f"out={tmp_path / 'run'}", f"data.sources=[folder:{root}, images:{unlabelled}]", "data.size=16",
        f"data.cache_dir={tmp_path / 'cache'}", "model.name=vit_tiny_p8",
        "model.options={depth: 1, embed_dim: 16, num_heads: 2}", "mae.decoder_dim=16", "mae.decoder_depth=1",
        "mae.decoder_heads=2", "train.batch_size=4", "train.iterations=999", "train.epochs=1.5",
        "train.warmup_epochs=0.5", "train.vis_every=0", "train.log_every=1", "train.threads=1"])
    summary = pre.pretrain(cfg)
    # 12 + 3 = 15 images at 4 a step: 1.5 epochs = ceil(5.625) = 6 steps, warm-up ceil(1.875) = 2
    assert summary["iterations"] == math.ceil(1.5 * 15 / 4) == 6 and cfg.train.warmup == 2
    assert [(s["source"], s["images"]) for s in summary["sources"]] == [(f"folder:{root}", 12),
                                                                       (f"images:{unlabelled}", 3)]
    assert json.loads((tmp_path / "run" / "sources.json").read_text()) == summary["sources"]
    out = capsys.readouterr().out
    assert f"folder:{root} [train]: 12 images (80.0 %)" in out and f"images:{unlabelled}: 3 images (20.0 %)" in out
    assert "15 images at 4 a step: 1.5 epochs = 6 iterations, warm-up 0.5 epochs = 2 iterations" in out
