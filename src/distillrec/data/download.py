"""Fetching a data set's official archive: progress bar, checksum, atomic write, safe extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from distillrec.utils import DistillrecError


@dataclass(frozen=True)
class Download:
    url: str
    checksum: str  # "md5:<hex>" or "sha256:<hex>"
    strip_top: bool = True  # archive members under one top folder (ml-100k/…) land directly in the target


def _hasher(checksum: str) -> tuple[Any, str]:
    algo, _, digest = checksum.partition(":")
    if algo not in ("md5", "sha256") or not digest:
        raise ValueError(f"checksum must look like 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    return hashlib.new(algo), digest.lower()


def fetch(url: str, dest: str | os.PathLike, checksum: str, *, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, verifying ``checksum`` before the file appears under its name.

    The bytes go to a temporary file beside ``dest``; only a verified file is renamed into place, so a failed
    or tampered download leaves nothing behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, expected = _hasher(checksum)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != expected:
            raise DistillrecError(
                f"checksum mismatch for {url}: expected {checksum}, got {checksum.partition(':')[0]}:{h.hexdigest()}"
                " — the file was not kept"
            )
        os.replace(tmp, dest)
    except OSError as e:  # URLError is an OSError: no network, refused, 404 …
        raise DistillrecError(f"could not download {url} ({e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def extract(archive: str | os.PathLike, target: str | os.PathLike, *, strip_top: bool = True) -> Path:
    """Unpack a zip into ``target`` (members outside it are refused). Extraction goes to a temporary folder
    that is moved into place member by member, so an interrupted run leaves no half-written file."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf, tempfile.TemporaryDirectory(dir=target) as tmp:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in names}
        strip = strip_top and len(tops) == 1 and all("/" in n for n in names)
        for name in names:
            rel = name.split("/", 1)[1] if strip else name
            dest = (target / rel).resolve()
            if not dest.is_relative_to(target.resolve()) or os.path.isabs(rel):
                raise DistillrecError(f"{archive}: member {name!r} would land outside {target}; refusing it")
            staged = Path(tmp) / rel
            staged.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(staged, "wb") as dst:
                shutil.copyfileobj(src, dst)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest)
    return target


def ensure_download(download: Download, target: str | os.PathLike, *, progress: bool = True) -> Path:
    """Fetch and unpack ``download`` into ``target``; the archive is removed once extracted."""
    target = Path(target)
    archive = target / Path(download.url.split("?", 1)[0]).name
    fetch(download.url, archive, download.checksum, progress=progress)
    try:
        extract(archive, target, strip_top=download.strip_top)
    finally:
        archive.unlink(missing_ok=True)
    return target
