"""The HetComp presets under configs/hetcomp/ resolve: teacher sets (every teacher's model and train keys)
and student runs (the method's keys)."""

from pathlib import Path

import pytest

from distillrec.config import resolve_config
from distillrec.distill.hetcomp import HetCompConfig
from distillrec.teachers import load_teacher_set_config, teacher_run_configs
from distillrec.utils import DistillrecError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "hetcomp"


@pytest.mark.parametrize("name", ["citeulike", "synthetic"])
def test_presets_resolve(name):
    teacher_cfg = load_teacher_set_config(CONFIGS / f"{name}-teachers.yaml")
    runs = teacher_run_configs(teacher_cfg)
    assert list(runs) == ["MF", "ML", "DL", "GNN", "AE", "I-AE"]
    assert [r.model_name for r in runs.values()] == ["bpr", "cml", "neumf", "lightgcn", "vae", "iae"]
    assert teacher_cfg.trajectory.k_checkpoints == 4 and teacher_cfg.trajectory.topk == 100
    student = resolve_config(config_file=CONFIGS / f"{name}.yaml")
    assert student.distill["method"] == "hetcomp"
    method = HetCompConfig(**{k: v for k, v in student.distill.items() if k not in ("method", "teacher")})
    assert method.lambda_base == 0.0 and method.n_topk <= teacher_cfg.trajectory.topk
    assert student.dataset == teacher_cfg.dataset


def test_teacher_set_config_errors_name_the_teacher(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("teachers:\n  MF: {model: {name: bpr, embeding_dim: 8}}\n")
    with pytest.raises(DistillrecError, match=r"teacher 'MF'.*embeding_dim"):
        teacher_run_configs(load_teacher_set_config(bad))
    bad.write_text("trajectory: {k_checkpoint: 4}\n")
    with pytest.raises(DistillrecError, match="k_checkpoint"):
        load_teacher_set_config(bad)
