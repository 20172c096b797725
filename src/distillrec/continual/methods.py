"""The stream methods: CCD and its baselines, each a base block and a per-block update of (teachers, student).

- ``ccd``      — spec §B.5–B.8: the student M_k = the previous distilled student D_{k−1}, grown with the CCD
  initialisation and updated on D_k with proxy-guided replay (stability/plasticity proxies of the distilled
  students); each teacher updated with LWC-KD + PIW plus replay of the student side (S, P, M_k); the teacher
  system = the rank ensemble; then D_k = a fresh student distilled from it, the start of the next block.
  Switches that are not the authors' keep what the deployed student knows of users idle in D_k:
  ``kd_init: student`` (D_k distilled from M_k's weights; ``both`` keeps the fresh D_k for the proxies and
  the teachers and starts the next stage 2 from the warm one) and ``student_update.start: deployed`` (M_k
  updated from M_{k−1} rather than D_{k−1}); ``init.student_mode`` grows the student's new rows its own way
  in every method (BENCHMARKS.md, session 18).
- ``finetune`` — teachers and student trained on the new block only, from their previous weights.
- ``retrain``  — teachers retrained from scratch on all blocks so far; the student distilled from them afresh.
- ``lwckd``    — teachers and student each updated with LWC-KD (+ PIW) from their own previous version:
  no distillation after D0, no proxies, no replay (CCD without its collaborative parts).
- ``once``     — the teachers and the student of D0, never updated (new entities score 0).

Block 0 is the same for all: base teachers trained on D0, a student distilled from their ensemble.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import scipy.sparse as sp
import torch

from distillrec.continual.config import ReplaySettings, at_block
from distillrec.continual.ensemble import RankEnsemble
from distillrec.continual.growth import frozen_copy, has_reprs
from distillrec.continual.lwckd import LWCKD, LWCKDConfig, layer_reprs, old_graphs
from distillrec.continual.negatives import NegativeSampler, top_pairs, union
from distillrec.continual.objectives import UpdateObjective, VAEUpdateObjective
from distillrec.continual.proxies import ema_model
from distillrec.continual.replay import ReplayBuffer, merge_replay, sample_replay
from distillrec.continual.stages import (
    Context,
    distil_student,
    distil_students,
    fit,
    grow_for_block,
    n_batches,
    stage_train_config,
    train_teachers,
)
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError

METHODS = ("ccd", "finetune", "retrain", "lwckd", "once")


@dataclass
class StreamState:
    """The models carried from one block to the next."""

    teachers: list[Recommender]
    student: Recommender  # the deployed student M_k
    distilled: Recommender | None = None  # D_k (ccd)
    stability: Recommender | None = None  # S_{k-1} (ccd)
    plasticity: Recommender | None = None  # P_{k-1} (ccd)
    warm: Recommender | None = None  # D_k distilled from M_k (ccd, kd_init "both"): the next stage 2's start


def check_method(method: str) -> str:
    if method not in METHODS:
        raise DistillrecError(f"unknown stream method {method!r}; expected one of {', '.join(METHODS)}")
    return method


def base_block(ctx: Context) -> tuple[StreamState, dict[str, Any]]:
    view = ctx.stream.view(0)
    teachers, info = train_teachers(ctx, view, 0)
    student, info["kd"] = distil_student(ctx, teachers, view, 0)
    return StreamState(teachers, student, distilled=student), info


def update_block(ctx: Context, method: str, state: StreamState, k: int) -> tuple[StreamState, dict[str, Any]]:
    return {"ccd": _ccd, "finetune": _finetune, "retrain": _retrain, "lwckd": _lwckd, "once": _once}[
        check_method(method)](ctx, state, k)


def _init_mode(ctx: Context, method: str, student: bool = False) -> str:
    init = ctx.cfg.init
    if student and init.student_mode is not None:
        return init.student_mode
    return ("random" if method == "finetune" else "ccd") if init.mode == "auto" else init.mode


# -- replay ---------------------------------------------------------------------------------------------------
def _exclusion(ctx: Context, k: int) -> sp.csr_matrix:
    """Items never replayed at block k: the training items of blocks k−1 and k."""
    m = (ctx.stream.matrix(k - 1, "train", k) + ctx.stream.matrix(k, "train")).tocsr()
    m.data[:] = 1.0
    return m


def _replay_buffer(ctx: Context, sources: list[tuple[Recommender, float]], reference: Recommender,
                   settings: ReplaySettings, k: int, n_steps: int, seed: int) -> ReplayBuffer | None:
    a = int(at_block(settings.top_a, k))
    sources = [(m, int(n)) for m, n in sources if int(n) > 0]
    if not sources or a <= 0:
        return None
    exclude = _exclusion(ctx, k)

    def draw(generator: torch.Generator):
        parts = [sample_replay(m, reference, n, a, settings.epsilon, exclude=exclude, generator=generator,
                               batch_size=settings.batch_size) for m, n in sources]
        return merge_replay(parts, reference.n_items)

    return ReplayBuffer(draw, n_steps, seed)


def _top_sets(ctx: Context, k: int, models: dict[str, Recommender]) -> dict[str, sp.csr_matrix]:
    """Each model's top-N items per user (``hard_negatives_top``), scored as the replay sampler scores them:
    blocks k−1 and k's training items never count (the authors' filtered score matrices)."""
    n, (nu, ni) = ctx.cfg.hard_negatives_top, ctx.stream.sizes(k)
    mask = _exclusion(ctx, k)
    return {name: top_pairs(m, n, nu, ni, mask) for name, m in models.items()}


# -- one model's continual update -----------------------------------------------------------------------------
def _update(ctx: Context, previous: Recommender, k: int, name: str, *, init: str, lwc: bool,
            replay_sources: list[tuple[Recommender, float]], settings: ReplaySettings, train_cfg,
            reference: Recommender | None = None,
            negatives: NegativeSampler | None = None) -> tuple[Recommender, dict]:
    """Grow ``previous`` to block k, then train it on D_k with LWC-KD (``lwc``) and replay of the sources; BPR
    negatives come from ``negatives`` (``_negative_sampler``) when given."""
    view = ctx.stream.view(k)
    seed = ctx.stage_seed(k, name)
    model = grow_for_block(ctx, previous, k, name, init)
    cfg = stage_train_config(train_cfg, ctx, seed)
    ref = reference if reference is not None else frozen_copy(model)
    buffer = _replay_buffer(ctx, replay_sources, ref, settings, k, n_batches(model, view, cfg), seed)
    tu = ctx.cfg.teacher_update
    if model.input_type == "user":  # Mult-VAE: KL to the previous output + pseudo-label replay
        objective = VAEUpdateObjective(model, frozen_copy(previous) if lwc else None, kl_lambda=tu.kl_lambda,
                                       replay=buffer, pseudo_label=tu.pseudo_label,
                                       resample_every=settings.resample_every)
    else:
        lwckd = None
        if lwc and has_reprs(model):
            old, lcfg = frozen_copy(previous), LWCKDConfig(**tu.lwckd)
            with torch.no_grad():
                layers = layer_reprs(old, old.n_users, old.n_items, lcfg.layers)
            old_u, old_i = torch.stack([u for u, _ in layers]), torch.stack([i for _, i in layers])
            old_train = ctx.graph(k - 1)
            graphs = None
            if lcfg.graph_terms:  # shared by every teacher of the block
                key = ("knn", k - 1, lcfg.n_neighbors)
                graphs = ctx.cache[key] = ctx.cache.get(key) or old_graphs(old_train, lcfg.n_neighbors)
            lwckd = LWCKD(old_u, old_i, old_train, lcfg, seed=seed, graphs=graphs)
        objective = UpdateObjective(model, lwckd=lwckd, replay=buffer, lambda_replay=settings.lambda_replay,
                                    anneal_epochs=settings.anneal_epochs, resample_every=settings.resample_every,
                                    negatives=negatives, seed=seed)
    info = fit(ctx, model, view, cfg, ctx.stage_dir(k, name), objective)
    if buffer is not None:
        info["n_replay"] = len(buffer.data)
    return model, info


def _negative_sampler(ctx: Context, k: int, hard: sp.spmatrix | None) -> NegativeSampler | None:
    """Negatives for block k's training pairs outside ``hard`` (a users × items pattern), or None."""
    return NegativeSampler(ctx.stream.view(k).train, hard) if hard is not None else None


def _update_teachers(ctx: Context, state: StreamState, k: int, init: str, lwc: bool,
                     sources: list[tuple[Recommender, float]],
                     hard: sp.spmatrix | None = None) -> tuple[list[Recommender], dict]:
    tu = ctx.cfg.teacher_update
    negatives = _negative_sampler(ctx, k, hard)  # one sampler for every teacher of the block: same pairs, same set
    teachers, info = [], {}
    for i, previous in enumerate(state.teachers):
        name = f"teacher{i}-{ctx.cfg.teachers[i]['name']}"
        model, info[name] = _update(ctx, previous, k, name, init=init, lwc=lwc, replay_sources=sources,
                                    settings=tu.replay, train_cfg=tu.train, negatives=negatives)
        teachers.append(model)
    return teachers, info


# -- the methods ----------------------------------------------------------------------------------------------
def _ccd(ctx: Context, state: StreamState, k: int) -> tuple[StreamState, dict]:
    su, tu = ctx.cfg.student_update, ctx.cfg.teacher_update
    if state.distilled is None:
        raise DistillrecError("ccd needs the distilled student of the previous block in its state")
    t0 = time.perf_counter()
    stability = ema_model(state.stability, state.distilled, float(at_block(su.w_stability, k)))
    plasticity = ema_model(state.plasticity, state.distilled, float(at_block(su.w_plasticity, k)))
    info: dict[str, Any] = {"proxies_seconds": round(time.perf_counter() - t0, 3)}
    # hard negatives (spec §B.6d, §B.7.4, §B.5): the top-N of E_{k−1}, D_{k−1}, S_{k−1}, P_{k−1}, then M_k
    nu, ni = ctx.stream.sizes(k)
    tops = _top_sets(ctx, k, {"system": RankEnsemble(state.teachers, ctx.cfg.ensemble_beta),
                              "distilled": state.distilled, "S": stability, "P": plasticity}) \
        if ctx.cfg.hard_negatives_top else None
    # Stage 2: the deployed student, replaying what the proxies know and the distilled student lost
    sources = [(stability, at_block(su.replay.n_stability, k))]
    if k > 1:  # at k = 1 both proxies are D_0: the authors use S only
        sources.append((plasticity, at_block(su.replay.n_plasticity, k)))
    hard = union([tops[x] for x in ("system", "distilled", "S", "P")], nu, ni) if tops else None
    deployed = su.start == "deployed"
    start = state.warm if state.warm is not None else state.distilled
    student, info["student"] = _update(ctx, state.student if deployed else start, k, "student",
                                       init=_init_mode(ctx, "ccd", student=True), lwc=False,
                                       replay_sources=sources, settings=su.replay, train_cfg=su.train,
                                       reference=None if deployed else frozen_copy(start),
                                       negatives=_negative_sampler(ctx, k, hard))
    if tops:
        tops |= _top_sets(ctx, k, {"M": student})
    # Stage 3: every teacher, with LWC-KD + PIW and the student side's knowledge
    t_sources = [(stability, at_block(tu.replay.n_stability, k)), (plasticity, at_block(tu.replay.n_plasticity, k)),
                 (frozen_copy(student), at_block(tu.replay.n_student, k))]
    hard = union([tops[x] for x in ("system", "S", "P", "M")], nu, ni) if tops else None
    teachers, info["teachers"] = _update_teachers(ctx, state, k, _init_mode(ctx, "ccd"), True, t_sources, hard)
    # Stage 1 for the next block: a student distilled from the updated teacher system (fresh, or from M_k)
    hard = union([tops[x] for x in ("S", "P", "M")], nu, ni) if tops else None
    kd_init = ctx.cfg.kd_init
    starts = {"kd": student if kd_init == "student" else None} | ({"kd-warm": student} if kd_init == "both" else {})
    runs = distil_students(ctx, teachers, ctx.stream.view(k), k, hard, starts)  # one knowledge pass for both
    distilled, info["kd"] = runs["kd"]
    warm = None
    if "kd-warm" in runs:
        warm, info["kd_warm"] = runs["kd-warm"]
    return StreamState(teachers, student, distilled, stability, plasticity, warm), info


def _finetune(ctx: Context, state: StreamState, k: int, lwc: bool = False) -> tuple[StreamState, dict]:
    """Teachers and student trained on the new block only; ``lwc`` adds LWC-KD from their previous selves."""
    method = "lwckd" if lwc else "finetune"
    su = ctx.cfg.student_update
    teachers, info = _update_teachers(ctx, state, k, _init_mode(ctx, method), lwc, [])
    student, info["student"] = _update(ctx, state.student, k, "student", init=_init_mode(ctx, method, student=True),
                                       lwc=lwc, replay_sources=[], settings=su.replay, train_cfg=su.train)
    return StreamState(teachers, student), info


def _lwckd(ctx: Context, state: StreamState, k: int) -> tuple[StreamState, dict]:
    return _finetune(ctx, state, k, lwc=True)


def _retrain(ctx: Context, state: StreamState, k: int) -> tuple[StreamState, dict]:
    view = ctx.stream.view(k, train="history")
    teachers, info = train_teachers(ctx, view, k)
    student, info["kd"] = distil_student(ctx, teachers, view, k)
    return StreamState(teachers, student, distilled=student), info


def _once(ctx: Context, state: StreamState, k: int) -> tuple[StreamState, dict]:
    teachers = [grow_for_block(ctx, t, k, f"teacher{i}", "zero") for i, t in enumerate(state.teachers)]
    student = grow_for_block(ctx, state.student, k, "student", "zero")
    return StreamState(teachers, student), {}
