"""continual room: the stream protocol (blocks D0..Dn, growing id spaces, r(k, j), LA/RA/H-mean) and CCD
(KDD'24) with its baselines — see ``specs/hetcomp_ccd.md`` part B.

- ``stream``: :class:`Stream`, :func:`load_stream`, :func:`cut_stream`, :func:`stream_from_blocks`
- ``growth`` / ``entity_init`` / ``proxies`` / ``replay`` / ``lwckd`` / ``ensemble``: CCD's parts
- ``metrics``: :func:`stream_summary` (LA, RA, H-mean per block)
- ``driver``: :func:`run_stream` (one method, one seed, resumable between blocks) and :func:`stream` (the
  ``distillrec stream`` command: several seeds, one summary)
"""

from distillrec.continual.config import StreamConfig, resolve_stream_config
from distillrec.continual.driver import run_stream, stream
from distillrec.continual.ensemble import RankEnsemble
from distillrec.continual.entity_init import init_new_entities, neighbour_init
from distillrec.continual.growth import grow_model
from distillrec.continual.methods import METHODS
from distillrec.continual.metrics import stream_summary
from distillrec.continual.proxies import ema_model
from distillrec.continual.replay import merge_replay, sample_replay
from distillrec.continual.stream import Stream, cut_stream, load_stream, stream_from_blocks

__all__ = [
    "METHODS",
    "RankEnsemble",
    "Stream",
    "StreamConfig",
    "cut_stream",
    "ema_model",
    "grow_model",
    "init_new_entities",
    "load_stream",
    "merge_replay",
    "neighbour_init",
    "resolve_stream_config",
    "run_stream",
    "sample_replay",
    "stream",
    "stream_from_blocks",
    "stream_summary",
]
