"""``run_stream``: one method over one stream with one seed, block by block, resumable between blocks; and
``stream``, the function behind ``distillrec stream`` (several seeds, one summary).

A run directory holds ``config.yaml``, ``state.json`` (rewritten atomically after every block: the blocks done,
their evaluations and timings), ``state/block{k}.pt`` (the models after the last finished block, plain tensors),
``blocks/D{k}/<stage>/log.jsonl`` (each training stage's log), and at the end ``results.json``, ``report.md``,
``r_heatmap.png`` and ``la_ra.png``. Block 0 is the same for every method: with ``base_dir`` it is computed
once per (stream, base settings, seed) and reused by the other methods' runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from distillrec.continual.config import StreamConfig, resolve_stream_config
from distillrec.continual.ensemble import RankEnsemble
from distillrec.continual.methods import StreamState, base_block, check_method, update_block
from distillrec.continual.report import assemble_results, write_outputs
from distillrec.continual.stages import Context, build_model, evaluate_block
from distillrec.continual.stream import Stream, cut_stream, load_stream, stream_from_blocks
from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender
from distillrec.utils import DistillrecError, atomic_torch_save, atomic_write_json, atomic_write_text, seed_everything

STATE_FORMAT = "distillrec-stream-state/1"
_BASE_KEYS = ("teachers", "student", "teacher_train", "kd", "kd_train", "kd_item_pass", "kd_user_pass",
              "hard_negatives_top", "kd_ego_rrd", "ensemble_beta", "graph", "device")
# keys added after caches were written: they enter the base block's hash only when set away from these
# defaults, so existing D0 caches stay valid
_LATE_KEY_DEFAULTS = {"kd_user_pass": "batch", "hard_negatives_top": 0, "kd_ego_rrd": False}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def as_stream(dataset: str | Stream | Dataset, cfg: StreamConfig, data_dir: str | None = None) -> Stream:
    if isinstance(dataset, Stream):
        return dataset
    s = cfg.stream
    if isinstance(dataset, Dataset):
        if dataset.blocks:
            return stream_from_blocks(dataset)
        return cut_stream(dataset, s.base_fraction, s.n_blocks, s.ratios, s.seed)
    return load_stream(dataset, data_dir, base_fraction=s.base_fraction, n_blocks=s.n_blocks, ratios=s.ratios,
                       seed=s.seed, **s.dataset)


# -- saving and restoring the models between blocks ----------------------------------------------------------
def _pack(model: Recommender | None, block: int) -> dict[str, Any] | None:
    if model is None:
        return None
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"n_users": model.n_users, "n_items": model.n_items, "block": block, "state": state}


def _unpack(ctx: Context, blob: dict[str, Any] | None, spec: dict[str, Any]) -> Recommender | None:
    if blob is None:
        return None
    model = build_model(spec, int(blob["n_users"]), int(blob["n_items"]), ctx.graph(int(blob["block"])), 0, ctx.device)
    model.load_state_dict(blob["state"])
    model.eval()
    return model


def save_state(path: Path, state: StreamState, k: int) -> None:
    prev = max(0, k - 1)  # proxies are sized (and wired) for the block before
    blob = {"format": STATE_FORMAT, "block": k, "teachers": [_pack(t, k) for t in state.teachers],
            "student": _pack(state.student, k), "distilled": _pack(state.distilled, k),
            "stability": _pack(state.stability, prev), "plasticity": _pack(state.plasticity, prev),
            "warm": _pack(state.warm, k)}
    atomic_torch_save(path, blob)


def load_state(ctx: Context, path: Path) -> StreamState:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != STATE_FORMAT:
        raise DistillrecError(f"{path}: not a distillrec stream state ({STATE_FORMAT})")
    student = ctx.cfg.student
    return StreamState(
        teachers=[_unpack(ctx, b, spec) for b, spec in zip(blob["teachers"], ctx.cfg.teachers)],
        student=_unpack(ctx, blob["student"], student), distilled=_unpack(ctx, blob["distilled"], student),
        stability=_unpack(ctx, blob["stability"], student), plasticity=_unpack(ctx, blob["plasticity"], student),
        warm=_unpack(ctx, blob.get("warm"), student))  # states written before kd_init "both" have none


# -- one run --------------------------------------------------------------------------------------------------
def run_stream(dataset: str | Stream | Dataset, method: str, out_dir: str | Path, config: StreamConfig | None = None,
               *, seed: int = 0, resume: bool = False, base_dir: str | Path | None = None,
               data_dir: str | None = None, echo: Callable[[str], None] | None = None,
               progress: bool | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Run ``method`` over the stream; returns (and writes) the results. ``stop_after=k`` ends after block k
    (a later call with ``resume=True`` continues)."""
    check_method(method)
    cfg = config or StreamConfig()
    echo = echo or print
    out = Path(out_dir)
    stream = as_stream(dataset, cfg, data_dir)
    ctx = Context(cfg, stream, seed, out, echo, progress)
    ident = {"method": method, "seed": seed, "stream": stream.fingerprint(), "config": _hash(cfg.to_plain())}
    state_json = out / "state.json"
    blocks: list[dict[str, Any]] = []
    state: StreamState | None = None
    if state_json.exists():
        if not resume:
            raise DistillrecError(f"{out} already holds a stream run; pass resume=True (--resume) to continue it "
                                  "or choose another output folder")
        saved = json.loads(state_json.read_text())
        if saved.get("ident") != ident:
            raise DistillrecError(f"{state_json}: written by another method, seed, stream or config "
                                  f"({saved.get('ident')}); resuming needs the same ones")
        blocks = saved["blocks"]
        if blocks:
            state = load_state(ctx, out / "state" / f"block{len(blocks) - 1}.pt")
            echo(f"resuming {method} after block D{len(blocks) - 1}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_plain(), sort_keys=False))
    seed_everything(seed)
    last = stream.n_blocks - 1 if stop_after is None else min(stop_after, stream.n_blocks - 1)
    for k in range(len(blocks), last + 1):
        t0 = time.perf_counter()
        if k == 0:
            state, info, ev = _base(ctx, base_dir)
        else:
            state, info = update_block(ctx, method, state, k)
            ev = evaluate_block(ctx, _roles(ctx, state), k)
        # models first, then the record that points at them, then drop the previous block's models: a run
        # killed anywhere in between still finds the models of the last block state.json lists
        save_state(out / "state" / f"block{k}.pt", state, k)
        record = {"block": k, "seconds": round(time.perf_counter() - t0, 3), "stages": info, "eval": ev}
        blocks.append(record)
        atomic_write_json(state_json, {"ident": ident, "blocks": blocks})
        (out / "state" / f"block{k - 1}.pt").unlink(missing_ok=True)
        for done in (out / "blocks" / f"D{k}").glob("*/done.pt"):  # finished stages live on in the state
            done.unlink()
        echo(_progress_line(ctx, method, record))
    results = assemble_results(stream, method, seed, cfg, blocks)
    if len(blocks) == stream.n_blocks:
        write_outputs(results, out)
    return results


def _roles(ctx: Context, state: StreamState) -> dict[str, Recommender]:
    return {"teacher": RankEnsemble(state.teachers, ctx.cfg.ensemble_beta), "student": state.student}


def _base(ctx: Context, base_dir: str | Path | None) -> tuple[StreamState, dict, dict]:
    """Block 0, from the shared cache when another method's run already computed it."""
    plain = ctx.cfg.to_plain()
    key = _hash({"stream": ctx.stream.fingerprint(), "seed": ctx.seed, "eval": plain["eval"],
                 **{k: plain[k] for k in _BASE_KEYS if _LATE_KEY_DEFAULTS.get(k, object()) != plain[k]}})
    cache = Path(base_dir) / key if base_dir is not None else None
    if cache is not None and (cache / "block0.json").exists():
        state = load_state(ctx, cache / "block0.pt")
        saved = json.loads((cache / "block0.json").read_text())
        ctx.echo(f"block D0 reused from {cache}")
        return state, saved["info"] | {"reused_from": str(cache)}, saved["eval"]
    state, info = base_block(ctx)
    ev = evaluate_block(ctx, _roles(ctx, state), 0)
    if cache is not None:
        save_state(cache / "block0.pt", state, 0)
        atomic_write_json(cache / "block0.json", {"info": info, "eval": ev})
    return state, info, ev


def _progress_line(ctx: Context, method: str, record: dict[str, Any]) -> str:
    k, metric = record["block"], ctx.cfg.eval.primary
    parts = [f"[{method} seed {ctx.seed}] block D{k}/{ctx.stream.n_blocks - 1} in {record['seconds']:.1f}s:"]
    for role, entry in record["eval"].items():
        row = " ".join(f"{b.get(metric, float('nan')):.4f}" for b in entry["blocks"])
        parts.append(f"{role} {metric} D0..D{k} = {row}")
    return "  ".join(parts)


# -- several seeds: the CLI's entry point ----------------------------------------------------------------------
def stream(dataset: str, method: str = "ccd", *, seeds: int | Sequence[int] = 1, out: str | Path = "runs/stream",
           config_file: str | Path | None = None, overrides: Sequence[str] = (), resume: bool = False,
           base_dir: str | Path | None = None, data_dir: str | None = None,
           echo: Callable[[str], None] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """``distillrec stream``: ``method`` over ``dataset``'s stream for each seed (``out/seed{s}``), then the
    mean ± std over seeds in ``out/results.json`` and ``out/report.md``. Block 0 is shared through
    ``base_dir`` (default ``out/../_base``: sibling method folders share it)."""
    from distillrec.continual.report import aggregate_seeds, write_aggregate

    cfg = resolve_stream_config(config_file, overrides)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise DistillrecError("seeds: at least one seed")
    out = Path(out)
    base = Path(base_dir) if base_dir is not None else out.parent / "_base"
    strm = as_stream(dataset, cfg, data_dir)
    runs = [run_stream(strm, method, out / f"seed{s}", cfg, seed=s, resume=resume, base_dir=base, echo=echo,
                       progress=progress) for s in seed_list]
    agg = aggregate_seeds(runs)
    write_aggregate(agg, out)
    return agg
