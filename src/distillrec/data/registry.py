"""The named data sets: where their files live, how to read them, their default preprocessing and split.

``load_dataset(name, data_dir=None, **overrides)``: files come from ``<data dir>/<folder>`` (see
:func:`distillrec.utils.data_dir`); a data set with an official URL is downloaded there on first use;
``overrides`` change fields of the entry's :class:`PrepConfig` (e.g. ``split="ratio", ratios=(0.6, 0.2, 0.2)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distillrec import utils
from distillrec.data.build import PrepConfig, build_blocks, build_dataset
from distillrec.data.dataset import Dataset
from distillrec.data.download import Download, ensure_download
from distillrec.data.io import SPLIT_NAMES, read_interactions
from distillrec.utils import DistillrecError

Reader = Callable[[dict[str, Path]], pd.DataFrame]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    folder: str = ""  # under the data dir
    files: tuple[str, ...] = ()  # required files (each also accepted with a .gz suffix)
    read: Reader | None = None  # {file name: path} → interaction frame
    prep: PrepConfig = field(default_factory=PrepConfig)
    kind: str = "interactions"  # "interactions" | "blocks" | "synthetic"
    citation: str = ""
    download: Download | None = None
    notes: str = ""


def _one(fmt: str, file: str, **kw: Any) -> Reader:
    return lambda paths: read_interactions(paths[file], fmt, **kw)


def _given(fmt: str, parts: dict[str, str]) -> Reader:
    """Several files, one per split (e.g. LightGCN's train.txt / test.txt)."""

    def read(paths: dict[str, Path]) -> pd.DataFrame:
        frames = [read_interactions(paths[f], fmt) for f in parts.values()]
        codes = np.repeat([SPLIT_NAMES.index(s) for s in parts], [len(f) for f in frames])
        out = pd.concat(frames, ignore_index=True)
        out["split"] = pd.Categorical.from_codes(codes, categories=SPLIT_NAMES)
        return out

    return read


_CITE = {
    "ml-100k": "F. M. Harper, J. A. Konstan. The MovieLens Datasets: History and Context. ACM TiiS 5(4), 2015.",
    "gowalla": "E. Cho, S. A. Myers, J. Leskovec. Friendship and Mobility. KDD 2011; split: X. Wang et al., NGCF, "
    "SIGIR 2019, reused by X. He et al., LightGCN, SIGIR 2020.",
    "citeulike": "H. Wang, B. Chen, W.-J. Li. Collaborative Topic Regression with Social Regularization for Tag "
    "Recommendation. IJCAI 2013.",
    "derrd": "S. Kang, J. Hwang, W. Kweon, H. Yu. DE-RRD: A Knowledge Distillation Framework for Recommender "
    "System. CIKM 2020.",
    "s3rec": "K. Zhou et al. S3-Rec: Self-Supervised Learning for Sequential Recommendation with Mutual "
    "Information Maximization. CIKM 2020 (Beauty: McAuley et al. SIGIR 2015; LastFM: HetRec 2011).",
    "ccd": "G. Lee, S. Kang, W. Kweon, H. Yu. Continual Collaborative Distillation for Recommender System. KDD 2024.",
}
# AdaRec's sampled protocol (spec §7.3): 100 fixed negatives per user, never interacted with in any split. The
# data sets stay on full ranking by default; the candidates are there for `evaluate --protocol sampled` and the
# AdaRec report's second table.
_SEQ = PrepConfig(split="loo", loo_order="position", keep_sequences=True, n_candidates=100)

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k", "MovieLens 100K; implicit: rating >= 4 is a positive (55,375 of 100,000 ratings); "
            "random per-user 8:1:1 split; timestamps kept",
            folder="ml-100k", files=("u.data",), read=_one("ml-100k", "u.data"),
            prep=PrepConfig(rating_threshold=4.0), citation=_CITE["ml-100k"],
            download=Download("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                              "md5:0e33842e24a9c977be4e0107933c0723"),
            notes="rating_threshold=None keeps all 100,000 ratings as positives",
        ),
        DatasetSpec(
            "gowalla", "Gowalla check-ins, the NGCF/LightGCN 80/20 split as given (train/test; no valid unless "
            "valid_fraction is set)", folder="gowalla", files=("train.txt", "test.txt"),
            read=_given("adjacency", {"train": "train.txt", "test": "test.txt"}),
            prep=PrepConfig(split="given", identity_ids=True), citation=_CITE["gowalla"],
            notes="valid_fraction=0.1 moves a seeded 10% of each user's train items to valid",
        ),
        DatasetSpec(
            "citeulike", "CiteULike-t users.dat, users with >= 5 items (HetComp/KDs), random per-user 8:1:1 split",
            folder="citeulike", files=("users.dat",), read=_one("citeulike", "users.dat"),
            prep=PrepConfig(min_user_interactions=5), citation=_CITE["citeulike"],
            notes="HetComp's split: split='shuffle_prefix', ratios=(0.6, 0.2, 0.2), eval_items_in_train=True, "
            "drop_incomplete_eval_users=True (configs/hetcomp/citeulike.yaml); user id = 0-based line of users.dat",
        ),
        DatasetSpec(
            "citeulike-loo", "The DE-RRD CiteULike leave-one-out split as shipped + 499 sampled negatives per user "
            "(the same 499 for valid and test)", folder="citeulike/derrd_loo", files=("split.tsv",),
            read=_one("presplit", "split.tsv"),
            prep=PrepConfig(split="given", identity_ids=True, n_users=5220, n_items=25182, n_candidates=499,
                            protocol="sampled"),
            citation=_CITE["derrd"] + " Data: " + _CITE["citeulike"],
            notes="id space (5220, 25182) from the authors' counts file; user 5219 and item 25181 carry no data",
        ),
        DatasetSpec(
            "beauty", "Amazon Beauty (S3-Rec/SASRec file), one chronological sequence per user; leave-one-out by "
            "position (+ 100 fixed negatives per user for the sampled protocol)", folder="s3rec-seq",
            files=("Beauty.txt",), read=_one("sequence", "Beauty.txt"),
            prep=_SEQ, citation=_CITE["s3rec"],
        ),
        DatasetSpec(
            "lastfm", "LastFM (S3-Rec file), one chronological sequence per user; leave-one-out by position (+ 100 "
            "fixed negatives per user for the sampled protocol)",
            folder="s3rec-seq", files=("LastFM.txt",), read=_one("sequence", "LastFM.txt"), prep=_SEQ,
            citation=_CITE["s3rec"],
            notes="sequences keep repeated items; the CSR splits are binary (a repeat counts once per split)",
        ),
        DatasetSpec(
            "gowalla-stream", "Gowalla in 6 chronological blocks D0..D5 (CCD), each with its own train/valid/test",
            folder="ccd-continual/Gowalla", files=("blocks.tsv",), read=_one("blocks", "blocks.tsv"), kind="blocks",
            citation=_CITE["ccd"] + " Data: " + _CITE["gowalla"].split(";")[0],
        ),
        DatasetSpec(
            "yelp-stream", "Yelp in 6 chronological blocks D0..D5 (CCD), each with its own train/valid/test",
            folder="ccd-continual/Yelp", files=("blocks.tsv",), read=_one("blocks", "blocks.tsv"), kind="blocks",
            citation=_CITE["ccd"] + " Data: Yelp Open Dataset (non-commercial terms).",
            notes="the block lists repeat some items: meta['n_rows'] counts rows, the CSR matrices count pairs",
        ),
        DatasetSpec(
            "synthetic", "built-in generator: 2,000 users x 1,500 items, power-law popularity, 32 taste clusters; "
            "random per-user 8:1:1 split", kind="synthetic", citation="distillrec synthetic generator",
            notes="generator options (n_users, n_items, n_clusters, sequences=True, …) are accepted as overrides",
        ),
    )
}


def list_datasets() -> list[str]:
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise DistillrecError(f"unknown data set {name!r}; known data sets: {', '.join(REGISTRY)}") from None


def locate_files(spec: DatasetSpec, root: Path) -> dict[str, Path] | None:
    """Each required file (plain or .gz) under ``root/<folder>``; None when any is missing."""
    folder = root / spec.folder
    found = {}
    for f in spec.files:
        hit = next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None)
        if hit is None:
            return None
        found[f] = hit
    return found


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True, **overrides: Any
) -> Dataset:
    """A registry data set, prepared: read, filtered, split (and candidates sampled where the protocol needs
    them). ``overrides`` are :class:`PrepConfig` fields; ``download=False`` never touches the network."""
    spec = get_spec(name)
    if spec.kind == "synthetic":
        from distillrec.data.synthetic import make_synthetic

        return make_synthetic(**overrides)
    if spec.kind == "blocks" and overrides:
        raise DistillrecError(f"{name}: a block stream is used as given; no overrides ({', '.join(overrides)})")
    root = utils.data_dir(data_dir)
    paths = locate_files(spec, root)
    if paths is None and spec.download is not None and download:
        ensure_download(spec.download, root / spec.folder)
        paths = locate_files(spec, root)
    if paths is None:
        expected = ", ".join(f"{f} (or {f}.gz)" for f in spec.files)
        how = f"; or let distillrec download it from {spec.download.url}" if spec.download and not download else ""
        raise DistillrecError(
            f"data set {name!r} is not in {root / spec.folder}: expected {expected} there "
            f"(set $DISTILLREC_DATA_DIR or pass data_dir= to use another data folder){how}"
        )
    df = spec.read(paths)
    meta = {"description": spec.description, "notes": spec.notes, "files": {k: str(v) for k, v in paths.items()}}
    if spec.kind == "blocks":
        return build_blocks(df, name, citation=spec.citation, meta=meta)
    prep = PrepConfig.make(spec.prep, **overrides)
    return build_dataset(df, name, prep, citation=spec.citation, meta=meta)


def load_file(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    columns: dict[str, str | int] | None = None,
    sep: str | None = None,
    header: bool = True,
    name: str | None = None,
    **prep: Any,
) -> Dataset:
    """A user's own interaction file with a column mapping → Dataset (``prep``: :class:`PrepConfig` fields)."""
    df = read_interactions(path, format, columns=columns, sep=sep, header=header)
    if "split" in df.columns and "split" not in prep:
        prep["split"] = "given"
    cfg = PrepConfig.make(None, **prep)
    if "block" in df.columns and cfg.split == "given":
        return build_blocks(df, name or Path(path).name)
    return build_dataset(df, name or Path(path).name, cfg, meta={"files": {"data": str(path)}})
