import pytest

from distillrec.config import TrainConfig, apply_overrides, parse_overrides, parse_value, resolve_config
from distillrec.utils import DistillrecError


def test_parse_value_types():
    assert parse_value("20") == 20
    assert parse_value("1e-3") == pytest.approx(1e-3)  # YAML 1.1 would keep this a string
    assert parse_value("[10, 20]") == [10, 20]
    assert parse_value("hit@5") == "hit@5"
    assert parse_value("true") is True


def test_override_routing():
    raw = apply_overrides({}, parse_overrides(["epochs=5", "model.embedding_dim=20", "embedding_dim=30",
                                               "dataset.seed=3"]))
    assert raw == {"train": {"epochs": 5}, "model": {"embedding_dim": 30}, "dataset": {"seed": 3}}


def test_set_requires_equals():
    with pytest.raises(DistillrecError, match="key=value"):
        parse_overrides(["epochs"])


def test_unknown_train_key_is_rejected_by_name():
    with pytest.raises(DistillrecError, match=r"train\.epohcs: unknown key"):
        resolve_config(dataset="synthetic", model="bpr", overrides=["train.epohcs=3"])


def test_unknown_section_is_rejected():
    with pytest.raises(DistillrecError, match="unknown config section 'trian'"):
        resolve_config(dataset="synthetic", model="bpr", overrides=["trian.epochs=3"])


def test_unknown_model_key_is_rejected_and_lists_known_keys():
    with pytest.raises(DistillrecError, match=r"embeding_dim: unknown key.*embedding_dim"):
        resolve_config(dataset="synthetic", model="bpr", overrides=["embeding_dim=3"])


def test_unknown_model_lists_known_models():
    with pytest.raises(DistillrecError, match=r"unknown model 'bprr'; known models: .*bpr"):
        resolve_config(dataset="synthetic", model="bprr")


def test_yaml_file_then_set_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: bpr, embedding_dim: 8}\ntrain: {epochs: 7, learning_rate: 0.01}\n")
    cfg = resolve_config(dataset="synthetic", config_file=f, overrides=["train.epochs=3"])
    assert cfg.model_name == "bpr" and cfg.model_hparams == {"embedding_dim": 8}
    assert cfg.train.epochs == 3 and cfg.train.learning_rate == 0.01


def test_bad_yaml_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [epochs: 3\n")
    with pytest.raises(DistillrecError, match=r"bad\.yaml: invalid YAML"):
        resolve_config(config_file=f)
    with pytest.raises(DistillrecError, match="config file not found"):
        resolve_config(config_file=tmp_path / "missing.yaml")


def test_train_config_validates_ranges():
    with pytest.raises(ValueError):
        TrainConfig(learning_rate=-1)
