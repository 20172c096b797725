"""``EvalResult``: mean metrics, per-user values and counts of one evaluation, JSON-serialisable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EvalResult:
    """The outcome of one evaluation run.

    ``metrics`` maps ``"recall@20"``-style keys to the mean over evaluated users; ``per_user`` maps the same
    keys to one float64 value per evaluated user, aligned with ``users`` (internal user ids). Users without
    held-out items in the split are not evaluated; they are counted in ``n_users_skipped``.
    """

    protocol: str  # "full" or "sampled"
    split: str
    ks: tuple[int, ...]
    metrics: dict[str, float]
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    n_users_evaluated: int
    n_users_skipped: int
    n_targets: int = 0  # held-out (user, item) pairs that were ranked
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        try:
            return self.metrics[key]
        except KeyError:
            raise KeyError(f"metric {key!r} was not computed; available: {', '.join(self.metrics)}") from None

    def to_dict(self, per_user: bool = False) -> dict[str, Any]:
        """Plain JSON data; ``per_user=True`` adds the user ids and per-user value lists."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "split": self.split,
            "ks": list(self.ks),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "n_users_evaluated": int(self.n_users_evaluated),
            "n_users_skipped": int(self.n_users_skipped),
            "n_targets": int(self.n_targets),
            "seconds": float(self.seconds),
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        if per_user:
            out["users"] = np.asarray(self.users).tolist()
            out["per_user"] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.per_user.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of ``to_dict`` (per-user values are empty when they were not stored)."""
        try:
            users = np.asarray(data.get("users", []), dtype=np.int64)
            per_user = {k: np.asarray(v, dtype=np.float64) for k, v in data.get("per_user", {}).items()}
            for k, v in per_user.items():
                if len(v) != len(users):
                    raise ValueError(f"per_user[{k!r}] has {len(v)} values for {len(users)} users")
            return cls(
                protocol=str(data["protocol"]),
                split=str(data["split"]),
                ks=tuple(int(k) for k in data["ks"]),
                metrics={k: float(v) for k, v in data["metrics"].items()},
                users=users,
                per_user=per_user,
                n_users_evaluated=int(data["n_users_evaluated"]),
                n_users_skipped=int(data["n_users_skipped"]),
                n_targets=int(data.get("n_targets", 0)),
                seconds=float(data.get("seconds", 0.0)),
                extra=dict(data.get("extra", {})),
            )
        except KeyError as e:
            raise ValueError(f"evaluation result is missing the field {e.args[0]!r}") from None

    def summary(self, digits: int = 4) -> str:
        """One line: ``recall@20=0.1830 ndcg@20=0.1554 (29858 users, test)``."""
        vals = " ".join(f"{k}={v:.{digits}f}" for k, v in self.metrics.items())
        return f"{vals} ({self.n_users_evaluated} users, {self.split}, {self.protocol})"
