"""The one training loop: teachers, plain students, distilled students and super-nets.

Per epoch: derive the epoch's generator from (seed, epoch), build batches (one vectorised negative draw),
step the optimiser on the summed objective terms, validate every ``eval_every`` epochs, keep the best
checkpoint by ``valid_metric``, stop after ``patience`` evaluations without improvement, write ``last.pt``
and one JSON line to ``log.jsonl``. Because every random draw of an epoch is seeded by (seed, epoch), an
interrupted run resumed from ``last.pt`` repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from distillrec.config import TrainConfig
from distillrec.data.dataset import Dataset
from distillrec.models.base import Recommender
from distillrec.train.batches import BatchBuilder, epoch_generator, to_device
from distillrec.train.checkpoint import check_fingerprint, load_checkpoint, save_checkpoint
from distillrec.train.evaluation import evaluate_model, rounded
from distillrec.utils import DistillrecError, atomic_write_text, fusable, resolve_device


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    best_score: float | None
    valid_metric: str
    stopped_early: bool
    seconds_per_epoch: float
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


class Trainer:
    def __init__(
        self,
        model: Recommender,
        dataset: Dataset,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        distiller: Any | None = None,
        run_config: dict[str, Any] | None = None,
        progress: bool | None = None,
        echo: Callable[[str], None] | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.config = config
        # Objects with optional on_epoch_end(trainer, epoch, record) / on_fit_end(trainer, result) methods:
        # how HetComp records teacher trajectories and CCD hooks its replay without touching the loop.
        self.callbacks = list(callbacks)
        self.dataset = dataset
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.distiller = distiller.to(self.device) if isinstance(distiller, nn.Module) else distiller
        self.out_dir = Path(out_dir) if out_dir else None
        self.run_config = run_config or {}
        self.progress = progress
        self.echo = echo or (lambda msg: None)
        params = list(model.parameters())
        if distiller is not None:
            params += list(distiller.extra_parameters())
        self.optimizer = _make_optimizer(config, params) if params else None
        max_len = getattr(model.config, "max_len", None)
        self.batches = BatchBuilder(dataset, model.input_type, config.batch_size, config.n_negatives, max_len,
                                    trim=getattr(model, "padding_is_inert", True))
        self.protocol = dataset.protocol if config.protocol == "auto" else config.protocol

    # -- paths ----------------------------------------------------------------------------------------------
    def _path(self, name: str) -> Path | None:
        return self.out_dir / name if self.out_dir else None

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        state = {"epoch": 0, "best_epoch": 0, "best_score": None, "bad_evals": 0, "train_seconds": 0.0}
        history: list[dict[str, Any]] = []
        last = self._path("checkpoints/last.pt")
        if resume and last is not None and last.exists():
            state, history = self._restore(last)
            self.echo(f"resuming after epoch {state['epoch']}")
        has_valid = self.dataset.valid is not None and self.model.input_type != "none"
        if not has_valid and self.model.input_type != "none":
            self.echo("no valid split: training for the full epoch budget, the last epoch is kept")
        # a run that had already stopped early is finished: resuming it trains nothing more
        stopped, collapse_warned = has_valid and state["bad_evals"] >= cfg.patience, False
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            if self.model.input_type == "none" or stopped:
                break
            t0 = time.perf_counter()
            terms = self._train_epoch(epoch)
            seconds = time.perf_counter() - t0
            state["train_seconds"] += seconds
            record: dict[str, Any] = {"epoch": epoch, "loss": terms, "seconds": round(seconds, 4)}
            if self.distiller is not None and self.distiller.stats():
                record["distill"] = self.distiller.stats()  # temperatures, curriculum phase, ...
            improved = False
            if has_valid and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                metrics = self.evaluate("valid")
                record["valid"] = metrics
                score = _metric(metrics, cfg.valid_metric)
                if state["best_score"] is None or score > state["best_score"]:
                    state.update(best_score=score, best_epoch=epoch, bad_evals=0)
                    improved = True
                else:
                    state["bad_evals"] += 1
            elif not has_valid:
                state["best_epoch"], improved = epoch, True
            state["epoch"] = epoch
            history.append(record)
            if improved:
                self._save_best(epoch)
            self._call("on_epoch_end", self, epoch, record)  # before last.pt, which holds the callbacks' state
            self._save_last(state)
            self._log(record)
            self.echo(_format_record(record, cfg.valid_metric))
            if not math.isfinite(sum(terms.values())):
                raise DistillrecError(f"epoch {epoch}: the loss is not finite ({terms}); lower the learning rate")
            if not collapse_warned and _collapsed(self.model, terms, cfg, epoch):
                collapse_warned = True
                msg = (f"warning: epoch {epoch}: the pairwise loss is ln 2 ({terms['base']:.6f}), every score has "
                       f"collapsed to 0. weight_decay={cfg.weight_decay:g} (L2 through the optimizer) is too strong "
                       "for a batch-mean loss on sparse data: an L2 of λ on summed losses, as in most authors' code, "
                       f"is λ / (batch_size × n_negatives) = λ / {cfg.batch_size * cfg.n_negatives} here")
                self.echo(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
            if has_valid and state["bad_evals"] >= cfg.patience:
                stopped = True
                self.echo(f"early stop: no {cfg.valid_metric} improvement in {cfg.patience} evaluations")
                break
        if self.model.input_type == "none" or state["best_epoch"] == 0:
            self._save_best(state["epoch"])
        n = max(1, state["epoch"])
        result = TrainResult(
            epochs_run=state["epoch"],
            best_epoch=state["best_epoch"],
            best_score=state["best_score"],
            valid_metric=cfg.valid_metric,
            stopped_early=stopped,
            seconds_per_epoch=state["train_seconds"] / n,
            train_seconds=state["train_seconds"],
            history=history,
        )
        self._call("on_fit_end", self, result)
        return result

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        # Dropout and any sampling inside the model use the global RNG: seed it per epoch for exact resume.
        torch.manual_seed(self.config.seed * 7919 + epoch)
        g = epoch_generator(self.config.seed, epoch)
        self.model.train()
        if self.distiller is not None:
            if isinstance(self.distiller, nn.Module):
                self.distiller.train()
            self.distiller.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(self.batches.epoch(g), total=self.batches.n_batches(), desc=f"epoch {epoch}", leave=False,
                   disable=None if self.progress is None else not self.progress, mininterval=0.5)
        for batch in bar:
            batch = to_device(batch, self.device)
            terms = self._objective(batch)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
        return {k: round(v / max(1, n), 6) for k, v in sums.items()}

    def _objective(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.distiller is not None:
            return self.distiller.loss(batch)
        return {"base": self.model.loss(batch)}

    # -- evaluation -----------------------------------------------------------------------------------------
    def evaluate(self, split: str, protocol: str | None = None) -> dict[str, float]:
        return rounded(evaluate_model(self.model, self.dataset, split, protocol or self.protocol, self.config).metrics)

    # -- persistence ----------------------------------------------------------------------------------------
    def _common(self) -> dict[str, Any]:
        return {
            "model_name": self.model.name,
            "model_hparams": self.model.hparams(),
            "config": self.run_config,
            "dataset_name": self.dataset.name,
            "dataset_fingerprint": self.dataset.fingerprint(),
        }

    def _save_best(self, epoch: int) -> None:
        path = self._path("checkpoints/best.pt")
        if path is not None:
            save_checkpoint(path, {**self._common(), "epoch": epoch, "model": self.model.state_dict()})

    def _save_last(self, state: dict[str, Any]) -> None:
        path = self._path("checkpoints/last.pt")
        if path is None:
            return
        payload = {**self._common(), **state, "model": self.model.state_dict()}
        if self.optimizer is not None:
            payload["optimizer"] = self.optimizer.state_dict()
        if isinstance(self.distiller, nn.Module):
            payload["distiller"] = self.distiller.state_dict()
        payload["callbacks"] = [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks]
        save_checkpoint(path, payload)

    def _restore(self, path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ckpt = load_checkpoint(path, map_location=self.device)
        check_fingerprint(ckpt, self.dataset.fingerprint(), path, self.dataset.name)
        if ckpt["model_name"] != self.model.name or ckpt["model_hparams"] != self.model.hparams():
            raise DistillrecError(f"{path}: written by another model configuration; start a new --out or drop --resume")
        self.model.load_state_dict(ckpt["model"])
        if self.optimizer is not None and "optimizer" in ckpt:
            # a saved param group carries its implementation flags; keep this optimiser's (a checkpoint from
            # before the fused step would otherwise switch a resumed run back to the slow per-tensor update).
            # Set before loading, so torch also places `step` where the fused kernel wants it.
            opt_state = ckpt["optimizer"]
            impl = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
            groups = [{**g, **flags} for g, flags in zip(opt_state["param_groups"], impl, strict=True)]
            self.optimizer.load_state_dict({**opt_state, "param_groups": groups})
        if isinstance(self.distiller, nn.Module) and "distiller" in ckpt:
            self.distiller.load_state_dict(ckpt["distiller"])
        saved = ckpt.get("callbacks") or []
        for i, cb in enumerate(self.callbacks):
            if hasattr(cb, "load_state_dict"):
                if i >= len(saved) or saved[i] is None:
                    raise DistillrecError(f"{path}: holds no state for {type(cb).__name__} (written without it); "
                                          "start the run over")
                cb.load_state_dict(saved[i])
        state = {k: ckpt[k] for k in ("epoch", "best_epoch", "best_score", "bad_evals", "train_seconds")}
        history = self._truncate_log(state["epoch"])
        return state, history

    def _truncate_log(self, epoch: int) -> list[dict[str, Any]]:
        """Drop log lines of epochs after the checkpoint (an epoch that was cut short is run again)."""
        path = self._path("log.jsonl")
        if path is None or not path.exists():
            return []
        kept = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("epoch", 0) <= epoch]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def _log(self, record: dict[str, Any]) -> None:
        path = self._path("log.jsonl")
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fusable(params))
    return torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _collapsed(model: Recommender, terms: dict[str, float], cfg: TrainConfig, epoch: int) -> bool:
    """BPR at exactly ln 2 after the first epoch: the L2 pull has won and all scores are 0 (seen with Adam's
    coupled weight decay of 1e-4 on LightGCN-128 over Yelp, loss 0.689 → 0.693147 in five epochs)."""
    base = terms.get("base")
    return (model.input_type == "pairwise" and base is not None and epoch >= 2 and cfg.weight_decay > 0
            and abs(base - math.log(2.0)) < 1e-5)


def _metric(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise DistillrecError(f"valid_metric {name!r} is not computed; available: {', '.join(sorted(metrics))}")
    return float(metrics[name])


def _format_record(record: dict[str, Any], metric: str) -> str:
    loss = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
    line = f"epoch {record['epoch']:4d}  {loss}  {record['seconds']:.2f}s"
    if "valid" in record:
        line += f"  valid {metric}={record['valid'].get(metric, float('nan')):.4f}"
    return line
