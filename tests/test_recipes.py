"""Schedules stated in epochs (and SSFER's rule on the label count), and every recipe: it loads,
passes the pre-flight checks, builds its model, and the papers' recipes state the papers' epochs."""
import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from semifer.config import Config, load_config
from semifer.engine.preflight import check_config
from semifer.engine.schedule import apply_epochs, train_epochs
from semifer.engine.train import train
from semifer.models import create_model

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


def _train_cfg(**train):
    cfg = Config()
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg.train


# ---------------------------------------------------------------------------- the rules


def test_epochs_of_the_labelled_set_with_ssfers_rule_below_500_labels():
    # SSFER stage II: 100 epochs, 1000 below 500 labels, 5 warm-up epochs, batch 32
    rule = dict(epochs=100, few_label_epochs=1000, few_labels=500, warmup_epochs=5, batch_size=32)
    tc = _train_cfg(**rule)
    assert "100 epochs = 1,563 iterations" in train_epochs(tc, labelled=500, unlabelled=0)
    assert (tc.iterations, tc.warmup) == (1563, 79)            # ceil(100 * 500 / 32), ceil(5 * 500 / 32)
    tc = _train_cfg(**rule)
    line = train_epochs(tc, labelled=499, unlabelled=0)
    assert (tc.iterations, tc.warmup) == (15594, 78)           # ceil(1000 * 499 / 32), ceil(5 * 499 / 32)
    assert "fewer than 500 labelled: few_label_epochs" in line
    tc = _train_cfg(**rule)
    train_epochs(tc, labelled=499, unlabelled=0, world=2)      # global batch 64
    assert (tc.iterations, tc.warmup) == (7797, 39)


def test_epochs_of_the_unlabelled_set():
    # SSFER stage III: 50 epochs of the unlabelled set at 64 labelled : 64 unlabelled
    tc = _train_cfg(epochs=50, epoch_over="unlabelled", batch_size=64, uratio=1)
    train_epochs(tc, labelled=1226, unlabelled=11045)
    assert tc.iterations == math.ceil(50 * 11045 / 64) == 8629
    tc = _train_cfg(epochs=2, epoch_over="unlabelled", batch_size=8, uratio=3)
    train_epochs(tc, labelled=10, unlabelled=100)
    assert tc.iterations == math.ceil(2 * 100 / 24) == 9
    with pytest.raises(ValueError, match="unlabelled set is empty"):
        train_epochs(_train_cfg(epochs=1, epoch_over="unlabelled"), labelled=10, unlabelled=0)
    with pytest.raises(ValueError, match="expected labelled or unlabelled"):
        train_epochs(_train_cfg(epoch_over="labeled"), labelled=10, unlabelled=0)


def test_iterations_stay_as_given_without_epochs():
    tc = _train_cfg(iterations=30, warmup=3, few_label_epochs=1000, warmup_epochs=5)
    assert train_epochs(tc, labelled=10, unlabelled=100) is None
    assert (tc.iterations, tc.warmup) == (30, 3)               # the rule refines an epoch schedule only


def test_the_engine_applies_the_rule_and_says_so(tiny, capsys):
    # 42 labelled images (6 per class) < 43: 2 epochs instead of 1 at batch 8 = ceil(84 / 8) = 11 steps
    summary = train(load_config(None, tiny + ["train.epochs=1", "train.few_label_epochs=2", "train.few_labels=43",
                                              "train.warmup_epochs=0.5", "train.iterations=999"]))
    assert summary["iterations"] == 11
    assert ("train epochs over the labelled set (fewer than 43 labelled: few_label_epochs): 42 images at 8 a "
            "step: 2 epochs = 11 iterations, warm-up 0.5 epochs = 3 iterations") in capsys.readouterr().out


def test_the_engine_counts_epochs_of_the_unlabelled_set(tiny, tmp_path):
    summary = train(load_config(None, tiny + ["train.epochs=0.5", "train.epoch_over=unlabelled",
                                              "algorithm.name=fixmatch"]))
    unlabelled = sum(json.loads((tmp_path / "run" / "data.json").read_text())["unlabelled"])
    assert unlabelled > 42 and summary["iterations"] == math.ceil(0.5 * unlabelled / (8 * 2))


def test_preflight_rejects_an_unknown_epoch_base():
    with pytest.raises(ValueError, match="epoch_over='labeled'"):
        check_config(load_config(None, ["train.epoch_over=labeled"]))


# ---------------------------------------------------------------------------- every recipe


def _stages(name: str, tmp_path) -> list:
    """The train configs of a recipe: one, or a pipeline's stages II and III (plus stage I first)."""
    path = str(ROOT / "recipes" / name)
    with open(path) as f:
        sections = set(yaml.safe_load(f))
    if sections & {"shared", "pretrain", "finetune", "semi"}:
        from semifer.ssl.pipeline import load_recipe, stage_configs

        return list(stage_configs(load_recipe(path, None, []), str(tmp_path)))
    if sections & {"method", "mae", "simclr"}:  # a `semifer pretrain` recipe
        from semifer.ssl.pretrain import load_pretrain_config

        return [load_pretrain_config(path)]
    return [load_config(path)]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_and_builds(name, tmp_path):
    for cfg in _stages(name, tmp_path):
        if not hasattr(cfg, "algorithm"):  # stage I: its schedule is stated, and its encoder is stage II's model
            assert cfg.train.epochs > 0 or cfg.train.iterations > 0
            from semifer.ssl.pretrain import build_objective

            with torch.device("meta"):
                assert sum(p.numel() for p in build_objective(cfg, cfg.data.channels or 1).parameters()) > 0
            continue
        check_config(cfg)
        options = dict(cfg.model.options)
        if "vit" in cfg.model.name:
            options.setdefault("img_size", cfg.data.size)
        if cfg.model.name.startswith("openclip"):  # an optional extra: pip install 'semifer[clip]'
            pytest.importorskip("open_clip")
        with torch.device("meta"):  # the architecture only: no memory, no weights
            model = create_model(cfg.model.name, num_classes=7, in_chans=cfg.data.channels or 1,
                                 drop_rate=cfg.model.drop_rate, **options)
        assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("dataset", ["rafdb", "ferplus", "affectnet7", "affectnet8"])
def test_ssfer_recipes_state_the_papers_epochs(dataset, tmp_path):
    pre, finetune, semi = _stages(f"ssfer_{dataset}.yaml", tmp_path)
    assert (pre.train.epochs, pre.train.warmup_epochs) == (600, 50)
    ft = finetune.train
    assert (ft.epochs, ft.few_label_epochs, ft.few_labels, ft.warmup_epochs, ft.batch_size) == (100, 1000, 500, 5, 32)
    assert (semi.train.epochs, semi.train.epoch_over, semi.train.batch_size, semi.train.uratio) == (50, "unlabelled", 64, 1)
    # RAF-DB's 12,271 training faces at 10 % labels (1,226 labelled, 11,045 unlabelled), by hand:
    stage1, stage2, stage2_few, stage3 = (copy.deepcopy(c.train) for c in (pre, finetune, finetune, semi))
    apply_epochs(stage1, stage1.epochs, 12271, 256, "pool")
    assert (stage1.iterations, stage1.warmup) == (28761, 2397)   # ceil(600 * 12271 / 256), ceil(50 * 12271 / 256)
    train_epochs(stage2, 1226, 11045)
    assert (stage2.iterations, stage2.warmup) == (3832, 192)     # ceil(100 * 1226 / 32), ceil(5 * 1226 / 32)
    train_epochs(stage2_few, 450, 11821)
    assert (stage2_few.iterations, stage2_few.warmup) == (14063, 71)  # 1000 epochs below 500 labels
    train_epochs(stage3, 1226, 11045)
    assert stage3.iterations == 8629                                   # ceil(50 * 11045 / 64)


def test_recipes_that_state_iterations_are_the_papers_that_do():
    # FixMatch states 2^20 iterations; SIT-FER's code states 60 epochs of 800 iterations (not passes over the data)
    fixmatch = load_config(str(ROOT / "recipes" / "fixmatch_paper.yaml"))
    sitfer = load_config(str(ROOT / "recipes" / "sitfer_rafdb.yaml"))
    assert (fixmatch.train.iterations, fixmatch.train.epochs) == (2 ** 20, 0)
    assert (sitfer.train.iterations, sitfer.train.epochs) == (60 * 800, 0)


def test_pipeline_starts_stage_ii_from_a_published_mae_file(tmp_path, capsys):
    from test_pretrained import TINY, mae_checkpoint

    from semifer.ssl.pipeline import load_recipe, stage_configs

    recipe = load_recipe(None, None, ["model.name=vit_base_patch16_224", "data.size=32", "data.channels=3"])
    _, finetune, _ = stage_configs(recipe, str(tmp_path), encoder=str(tmp_path / "enc" / "encoder.safetensors"))
    assert finetune.model.init.endswith("encoder.safetensors") and not finetune.model.checkpoint_path
    path = tmp_path / "125w_base_warmup50_batch256_600.pth"   # MAE's layout: {"model": ..., "args": ...}
    enc = mae_checkpoint(path)
    _, finetune, semi = stage_configs(recipe, str(tmp_path), encoder=str(path))
    assert (finetune.model.checkpoint_path, finetune.model.init) == (str(path), "")
    assert semi.model.init == finetune.out and not semi.model.checkpoint_path
    model = create_model(finetune.model.name, 7, in_chans=3, checkpoint_path=finetune.model.checkpoint_path,
                         img_size=32, **TINY)
    assert model.checkpoint_report["missing"] == [] and "7 dropped" in capsys.readouterr().out
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.backbone.forward_features(x), enc.eval().forward_features(x), atol=1e-6)
