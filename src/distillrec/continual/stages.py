"""The pieces every stream method is made of: building models, one training stage through the trainer,
the base teachers, the student distilled from the teacher system, model growth with the CCD initialisation,
and the per-block evaluation r(k, 0..k)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scipy.sparse as sp
import torch

from distillrec.config import TrainConfig
from distillrec.continual.config import StreamConfig
from distillrec.continual.ensemble import RankEnsemble
from distillrec.continual.entity_init import init_new_entities
from distillrec.continual.growth import attach_interactions, grow_model
from distillrec.continual.stream import Stream
from distillrec.data.dataset import Dataset
from distillrec.evaluate import evaluate_full
from distillrec.models import Recommender, get_model_class
from distillrec.train.checkpoint import load_checkpoint, save_checkpoint
from distillrec.train.trainer import Trainer
from distillrec.utils import DistillrecError, resolve_device


@dataclass
class Context:
    """What the stages of one stream run share."""

    cfg: StreamConfig
    stream: Stream
    seed: int
    out: Path
    echo: Callable[[str], None]
    progress: bool | None = None
    cache: dict = field(default_factory=dict)  # what several models of one block share (kNN graphs)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    def stage_seed(self, k: int, stage: str, index: int = 0) -> int:
        """A seed per (run seed, block, stage, member): the same whether or not the run was resumed."""
        h = hashlib.sha256(f"{self.seed}|{k}|{stage}|{index}".encode()).hexdigest()
        return int(h[:8], 16) % (2**31 - 1)

    def graph(self, k: int) -> sp.csr_matrix:
        """The interactions graph/autoencoder models use at block k (config ``graph``)."""
        if self.cfg.graph == "history":
            return self.stream.history(k)
        return self.stream.matrix(k, "train")

    def stage_dir(self, k: int, name: str) -> Path:
        return self.out / "blocks" / f"D{k}" / name


def split_spec(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return spec["name"], {k: v for k, v in spec.items() if k not in ("name", "seed")}


def build_model(spec: dict[str, Any], n_users: int, n_items: int, interactions: sp.spmatrix, seed: int,
                device: torch.device) -> Recommender:
    name, hparams = split_spec(spec)
    cls = get_model_class(name)
    torch.manual_seed(seed)
    model = cls(n_users, n_items, cls.Config(**hparams)).to(device)
    attach_interactions(model, interactions)
    return model


def stage_train_config(base: TrainConfig, ctx: Context, seed: int) -> TrainConfig:
    return base.model_copy(update={"seed": seed, "device": ctx.cfg.device})


def n_batches(model: Recommender, view: Dataset, cfg: TrainConfig) -> int:
    n = view.train.nnz if model.input_type == "pairwise" else (
        view.n_items if model.input_type == "item" else view.n_users)
    return max(1, math.ceil(n / cfg.batch_size))


def fit(ctx: Context, model: Recommender, view: Dataset, cfg: TrainConfig, stage_dir: Path,
        objective: Any = None) -> dict[str, Any]:
    """Train ``model`` on ``view`` through the trainer (log in ``stage_dir/log.jsonl``); keep its best weights
    on ``view``'s valid split.

    A plain stage (no objective: base teachers, retraining) outlives an interruption: a finished one leaves
    ``done.pt`` and is reused, one cut short resumes from its ``last.pt`` (the trainer seeds every epoch by
    (seed, epoch), so the result is the uninterrupted one). Both are keyed by the stream, its config, the
    model and the train settings; the driver drops ``done.pt`` once the block's state is saved. A stage with
    an objective of its own (samplers, replay buffers, item-side passes) is run again whole."""
    key = _stage_key(ctx, model, view, cfg) if objective is None else None
    done = stage_dir / "done.pt"
    finished = _checkpoint_for(done, key)
    if finished is not None:
        model.load_state_dict(finished["model"])
        model.eval()
        ctx.echo(f"{stage_dir}: reusing the finished stage")
        return finished["info"]
    resume = _checkpoint_for(stage_dir / "checkpoints" / "last.pt", key) is not None
    if stage_dir.exists() and not resume:
        shutil.rmtree(stage_dir)
    trainer = Trainer(model, view, cfg, out_dir=stage_dir, distiller=objective, progress=ctx.progress,
                      run_config={"stage": key} if key is not None else None, echo=_prefixed(ctx, stage_dir))
    if hasattr(objective, "attach_optimizer"):  # an objective with passes of its own (CCD's item-side RRD)
        objective.attach_optimizer(trainer.optimizer)
    result = trainer.fit(resume=resume)
    best = stage_dir / "checkpoints" / "best.pt"
    model.load_state_dict(load_checkpoint(best, map_location=trainer.device)["model"])
    info = {"epochs": result.epochs_run, "best_epoch": result.best_epoch, "best_valid": result.best_score,
            "seconds": round(result.train_seconds, 3)}
    if key is not None:
        save_checkpoint(done, {"config": {"stage": key}, "info": info, "model": model.state_dict()})
    shutil.rmtree(stage_dir / "checkpoints")  # the block state keeps the weights that matter
    model.eval()
    return info


def _stage_key(ctx: Context, model: Recommender, view: Dataset, cfg: TrainConfig) -> str:
    plain = {"stream": ctx.stream.fingerprint(), "config": ctx.cfg.to_plain(), "model": model.name,
             "hparams": model.hparams(), "sizes": [view.n_users, view.n_items], "view": view.fingerprint(),
             "train": cfg.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checkpoint_for(path: Path, key: str | None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if this stage (``key``) wrote it, else None."""
    if key is None or not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path)
    except DistillrecError:  # a torn or foreign file: the stage is simply run again
        return None
    return ckpt if ckpt.get("config") == {"stage": key} else None


def _prefixed(ctx: Context, stage_dir: Path) -> Callable[[str], None]:
    """A stage's resume notice and warnings, named; its per-epoch lines stay in its log.jsonl."""
    def echo(msg: str) -> None:
        if msg.startswith(("resuming", "warning")):
            ctx.echo(f"{stage_dir.name}: {msg}")
    return echo


def train_teachers(ctx: Context, view: Dataset, k: int, tag: str = "teacher") -> tuple[list[Recommender], dict]:
    """Fresh teachers trained on ``view`` (each member with its own seed)."""
    teachers, info = [], {}
    nu, ni = ctx.stream.sizes(k)
    for i, spec in enumerate(ctx.cfg.teachers):
        seed = ctx.stage_seed(k, tag, int(spec.get("seed", i)))
        model = build_model(spec, nu, ni, ctx.graph(k), seed, ctx.device)
        name = f"{tag}{i}-{spec['name']}"
        info[name] = fit(ctx, model, view, stage_train_config(ctx.cfg.teacher_train, ctx, seed),
                         ctx.stage_dir(k, name))
        teachers.append(model)
    return teachers, info


def distil_student(ctx: Context, teachers: list[Recommender], view: Dataset, k: int,
                   hard: sp.spmatrix | None = None, start: Recommender | None = None,
                   name: str = "kd") -> tuple[Recommender, dict]:
    """One student distilled from the rank ensemble on ``view``: fresh, or from ``start``'s weights (see
    :func:`distil_students`)."""
    return distil_students(ctx, teachers, view, k, hard, {name: start})[name]


def distil_students(ctx: Context, teachers: list[Recommender], view: Dataset, k: int, hard: sp.spmatrix | None,
                    starts: dict[str, Recommender | None]) -> dict[str, tuple[Recommender, dict]]:
    """Students distilled from the rank ensemble on ``view`` (BPR + user-side RRD + item-side RRD, the item
    side in a pass of its own over all items unless ``kd_item_pass`` is "batch"), one per ``starts`` entry
    (stage name → None for a fresh student, or a model of the same kind sized for block k whose weights it
    starts from). The teacher knowledge and the negative sets are computed once for all of them.

    With ``hard_negatives_top`` N > 0, BPR negatives avoid the ensemble's top-N and ``hard`` (ccd: the top-N of
    S_{k−1}, P_{k−1} and M_k, spec §B.5); the user-side bags avoid ``hard`` and the pairs of the ensemble's
    item-side top-N lists too (their own top list is excluded by RRD already)."""
    from distillrec.continual.kd import CCDDistiller
    from distillrec.continual.negatives import lists_to_pairs, union
    from distillrec.distill.irrrd import IRRRD
    from distillrec.distill.knowledge import compute_knowledge

    t0 = time.perf_counter()
    ensemble = RankEnsemble(teachers, ctx.cfg.ensemble_beta)
    # kd_item_pass "batch" means the item side on each batch's positive items (CCD's λ_item is rescaled for
    # those), not IR-RRD's own default of every item in the batch users' lists
    config = IRRRD.make_config({"item_rows": "positives", **ctx.cfg.kd})
    knowledge = compute_knowledge(ensemble, view, IRRRD.knowledge_spec(config))
    seconds_knowledge = time.perf_counter() - t0
    nu, ni = ctx.stream.sizes(k)
    top = ctx.cfg.hard_negatives_top
    negatives = bags = None
    if top:
        extra = [hard] if hard is not None else []
        # the teacher's lists hold min(n_topk, N) of the N it should be; ccd's presets use 40 for both
        negatives = union([lists_to_pairs(knowledge.user_topk[:, :top], nu, ni), *extra], nu, ni)
        item_side = lists_to_pairs(knowledge.item_topk[:, :top], ni, nu).T
        bags = union([item_side, *extra], nu, ni)
    separate = ctx.cfg.kd_item_pass == "separate"
    out = {}
    for name, start in starts.items():
        seed = ctx.stage_seed(k, name)
        student = build_model(ctx.cfg.student, nu, ni, ctx.graph(k), seed, ctx.device)
        if start is not None:
            student.load_state_dict(start.state_dict())
        train_cfg = stage_train_config(ctx.cfg.kd_train, ctx, seed)
        distiller = CCDDistiller(student, knowledge, view, config, seed=seed, pass_batch_size=train_cfg.batch_size,
                                 user_pass=separate and ctx.cfg.kd_user_pass == "all", item_pass=separate,
                                 negatives=negatives, bag_exclude=bags, ego_lists=ctx.cfg.kd_ego_rrd)
        info = fit(ctx, student, view, train_cfg, ctx.stage_dir(k, name), distiller)
        info["knowledge_seconds"] = round(seconds_knowledge, 3)  # shared by every student of the call
        out[name] = student, info
    return out


def grow_for_block(ctx: Context, model: Recommender, k: int, stage: str, init: str) -> Recommender:
    """``model`` (sized for block k−1) grown to block k's entities; new rows by ``init``: "ccd" (1-hop +
    popular 2-hop), "random" (the model's own initialisation) or "zero"."""
    nu, ni = ctx.stream.sizes(k)
    torch.manual_seed(ctx.stage_seed(k, f"grow-{stage}"))
    grown = grow_model(model, nu, ni, new_rows="zero" if init == "zero" else "init", interactions=ctx.graph(k))
    if init == "ccd":
        ou, oi = ctx.stream.sizes(k - 1)
        init_new_entities(grown, ctx.stream.matrix(k, "train"), ou, oi, ctx.cfg.init.topk, ctx.cfg.init.one_hop_only)
        attach_interactions(grown, ctx.graph(k))  # drops any cache built on the old rows
    return grown


def evaluate_block(ctx: Context, models: dict[str, Recommender], k: int) -> dict[str, Any]:
    """r(k, j) for j = 0..k (test of block j, masked by block j's train or by blocks 0..j's train) and the
    new users of block k, for every model."""
    ev = ctx.cfg.eval
    train = "history" if ev.mask == "history" else "block"
    new_users = ctx.stream.new_users(k)
    out: dict[str, Any] = {}
    for role, model in models.items():
        blocks = []
        for j in range(k + 1):
            res = evaluate_full(model, ctx.stream.view(k, j, train=train), "test", ks=ev.ks, metrics=ev.metrics,
                                batch_size=ev.batch_size)
            blocks.append({m: round(v, 6) for m, v in res.metrics.items()} | {"n_users": res.n_users_evaluated})
        entry: dict[str, Any] = {"blocks": blocks, "parameters": model.num_parameters()}
        if len(new_users):
            res = evaluate_full(model, ctx.stream.view(k, k, train=train), "test", ks=ev.ks, metrics=ev.metrics,
                                batch_size=ev.batch_size, users=new_users)
            entry["new_users"] = {m: round(v, 6) for m, v in res.metrics.items()} | {
                "n_users": res.n_users_evaluated}
        out[role] = entry
    return out
