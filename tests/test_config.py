import pytest

from semifer.config import ConfigError, load_config, parse_override


def test_defaults_then_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  iterations: 50\n  lr: 0.1\ndata:\n  labels_per_class: 7\n")
    cfg = load_config(str(recipe), ["train.lr=0.2", "data.size=64", "algorithm.name=fixmatch", "algorithm.tau=0.9"])
    assert cfg.train.iterations == 50          # from the recipe
    assert cfg.train.lr == 0.2                 # override wins over the recipe
    assert cfg.data.size == 64 and cfg.data.labels_per_class == 7
    assert cfg.train.batch_size == 64          # untouched default
    assert cfg.algorithm == {"name": "fixmatch", "tau": 0.9}


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="train.clip'"):
        load_config(None, ["train.clip=1.0"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  labels_per_clas: 3\n")
    with pytest.raises(ConfigError, match=r"r.yaml.*data.labels_per_clas"):
        load_config(str(recipe))


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match="train.iterations.*int.*'many'"):
        load_config(None, ["train.iterations=many"])
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0  # int accepted where float expected
    assert load_config(None, ["resume=true"]).resume is True


def test_parse_override_nests_and_parses_yaml():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_per_channel_normalisation_from_yaml_and_cli(tmp_path):
    from semifer.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  mean: [0.588, 0.459, 0.402]\n  std: [0.228, 0.202, 0.190]\n")
    cfg = load_config(str(recipe))
    assert cfg.data.mean == [0.588, 0.459, 0.402] and cfg.data.std == [0.228, 0.202, 0.19]
    assert load_config(None, ["data.mean=0.4"]).data.mean == 0.4          # one value still works
    assert load_config(None, ["data.std=[1, 2, 3]"]).data.std == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="data.mean"):
        load_config(None, ["data.mean=abc"])


def test_warmup_starts_at_warmup_lr():
    from semifer.engine.schedule import warmup_cosine

    # SSFER: 5 warm-up epochs from 5e-5 to lr 1e-4 (ratio 0.5), then cosine to min_lr 1e-5
    assert warmup_cosine(0, 100, 10, 0.1, start_ratio=0.5) == pytest.approx(0.5)
    assert warmup_cosine(5, 100, 10, 0.1, start_ratio=0.5) == pytest.approx(0.75)
    assert warmup_cosine(10, 100, 10, 0.1, start_ratio=0.5) == pytest.approx(1.0)
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)                 # default: (step + 1) / warmup


def test_fixmatch_schedule_by_hand():
    import math

    from semifer.engine.schedule import fixmatch_cosine

    assert fixmatch_cosine(0, 1000) == 1.0
    assert fixmatch_cosine(500, 1000) == pytest.approx(math.cos(7 * math.pi / 32))
    assert fixmatch_cosine(1000, 1000) == pytest.approx(0.19509, abs=1e-5)   # cos(7 pi / 16)


def test_fixmatch_paper_recipe_states_the_papers_values():
    cfg = load_config("recipes/fixmatch_paper.yaml")
    tc = cfg.train
    assert (tc.uratio, tc.batch_size, tc.lr, tc.schedule, tc.iterations) == (7, 64, 0.03, "fixmatch", 2 ** 20)
    assert (tc.optimizer, tc.momentum, tc.nesterov, tc.weight_decay, tc.ema) == ("sgd", 0.9, True, 5e-4, 0.999)
    assert cfg.algorithm == {"name": "fixmatch", "tau": 0.95, "lambda_u": 1.0}
    assert (cfg.data.strong, cfg.model.name) == ("fixmatch", "wrn28_2")


def test_zero_step_interval_is_refused_at_load_not_mid_run():
    with pytest.raises(ConfigError, match=r"train.eval_every=0; expected an interval of at least 1"):
        load_config(None, ["train.eval_every=0"])
    assert load_config(None, ["train.ckpt_every=1"]).train.ckpt_every == 1


def test_test_time_shift_must_stay_inside_the_image():
    with pytest.raises(ConfigError, match=r"train.eval_shift=0.5; expected a share of the image side in \[0, 0.5\)"):
        load_config(None, ["train.eval_shift=0.5"])
    assert load_config(None, ["train.eval_shift=0.08"]).train.eval_shift == 0.08
