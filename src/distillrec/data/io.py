"""Readers: every supported file format → one pandas DataFrame with standard column names.

Standard columns: ``user``, ``item`` (ids as written in the file: int64 when every id is an integer, else
str — non-numeric ids are kept and mapped later, never rejected), and, where the format has them,
``rating`` (float64), ``timestamp`` (float64), ``split`` (categorical: train, valid, test — in that order, so
its codes are 0, 1, 2), ``block`` (int64). Rows keep file
order, which is the chronological order for sequence files. Gzip is detected by its magic bytes, whatever
the file is called. A malformed line is a :class:`DistillrecError` naming the file and the line number.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from distillrec.utils import DistillrecError

FORMATS = (
    "delimited", "parquet", "recbole", "ml-100k", "ml-dat", "adjacency", "sequence", "presplit", "blocks",
    "citeulike",
)
ROLES = ("user", "item", "rating", "timestamp", "split", "block")
SPLIT_NAMES = ("train", "valid", "test")
# Header names recognised when a delimited file comes without a column mapping (compared lower-case).
_ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "u", "user_id:token"),
    "item": ("item", "item_id", "itemid", "iid", "i", "movieid", "movie_id", "item_id:token"),
    "rating": ("rating", "ratings", "score", "rating:float"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "timestamp:float"),
    "split": ("split",),
    "block": ("block",),
}


def is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise DistillrecError(f"{path}: no such file")
    if is_gzip(path):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as e:
            raise DistillrecError(f"{path}: broken gzip file ({e})") from None
    return path.read_bytes()


def detect_format(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".inter"):
        return "recbole"
    if name == "u.data" or re.fullmatch(r"u[1-5ab]\.(base|test)", name):
        return "ml-100k"
    if name == "ratings.dat":
        return "ml-dat"
    if name == "users.dat":
        return "citeulike"
    if name.endswith((".csv", ".tsv")):
        return "delimited"
    raise DistillrecError(
        f"{path}: cannot tell the format from the name; pass format= one of {', '.join(FORMATS)}"
    )


def read_interactions(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    columns: dict[str, str | int] | None = None,
    sep: str | None = None,
    header: bool = True,
) -> pd.DataFrame:
    """Read one interaction file into a DataFrame with the standard columns (see the module docstring).

    ``columns`` maps roles (user, item, rating, timestamp, split, block) to column names — or to 0-based
    positions when ``header=False`` — for delimited and Parquet files; without it, common header names are
    recognised. ``sep`` is any separator (one or more characters; ``None`` infers it from the first line).
    """
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "delimited":
        return read_delimited(path, sep=sep, columns=columns, header=header)
    if fmt == "parquet":
        return _read_parquet(path, columns)
    if fmt == "recbole":
        return _read_recbole(path)
    if fmt == "ml-100k":
        return read_delimited(path, sep="\t", header=False, columns={"user": 0, "item": 1, "rating": 2, "timestamp": 3})
    if fmt == "ml-dat":
        return read_delimited(path, sep="::", header=False, columns={"user": 0, "item": 1, "rating": 2, "timestamp": 3})
    if fmt in ("adjacency", "sequence"):
        return read_lines(path)
    if fmt == "citeulike":
        return read_lines(path, count_first=True)
    if fmt == "presplit":
        return read_delimited(path, sep=sep or "\t", columns=columns or {r: r for r in ("user", "item", "split")})
    if fmt == "blocks":
        roles = ("block", "split", "user", "item")
        return read_delimited(path, sep=sep or "\t", columns=columns or {r: r for r in roles})
    raise DistillrecError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


# -- one id list per line -----------------------------------------------------------------------------------
def read_lines(path: str | os.PathLike, *, count_first: bool = False) -> pd.DataFrame:
    """``user item item …`` per line (LightGCN adjacency lists, one-sequence-per-line files), in line order.

    With ``count_first`` the line is CiteULike's ``n item_1 … item_n`` and the user id is the 0-based line
    number. Tokenised in one pass over the bytes: token starts and newlines are found with numpy and the line
    of every token by ``searchsorted``, so there is no Python loop per line; all-integer files are parsed by
    numpy's C number parser, others keep their tokens as strings.
    """
    data = read_bytes(path)
    raw = np.frombuffer(data, dtype=np.uint8)
    is_ws = (raw == 32) | ((raw >= 9) & (raw <= 13))  # exactly the bytes that bytes.split() splits on
    starts = np.flatnonzero(~is_ws & np.concatenate(([True], is_ws[:-1])))
    if starts.size == 0:
        raise DistillrecError(f"{path}: no interactions")
    newlines = np.flatnonzero(raw == ord("\n"))
    line_of_token = np.searchsorted(newlines, starts)  # 0-based line of each token
    first = np.concatenate(([True], line_of_token[1:] != line_of_token[:-1]))  # first token of each line
    head_line = line_of_token[first]
    lengths = np.diff(np.append(np.flatnonzero(first), starts.size)) - 1  # tokens after the head, per line
    tokens = _parse_ints(data, starts.size)
    if tokens is None:
        tokens = np.array(data.split())
    if count_first:
        counts = tokens[first] if tokens.dtype == np.int64 else _to_int(tokens[first], path, head_line)
        bad = np.flatnonzero(counts != lengths)
        if bad.size:
            b = bad[0]
            raise DistillrecError(
                f"{path}: line {head_line[b] + 1}: says {counts[b]} items but lists {lengths[b]}"
            )
        users = np.repeat(head_line, lengths).astype(np.int64)
    else:
        users = np.repeat(_ids(tokens[first]), lengths)
    return pd.DataFrame({"user": users, "item": _ids(tokens[~first])})


def _parse_ints(data: bytes, n_tokens: int) -> np.ndarray | None:
    """Every whitespace-separated token as int64, or None when some token is not an integer."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # older numpy only warns when it stops at a non-number
            values = np.fromstring(data, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    # int64 overflow saturates silently: such ids are kept as strings instead
    if values.size != n_tokens or (values == np.iinfo(np.int64).max).any():
        return None
    return values


def _to_int(tokens: np.ndarray, path: str | os.PathLike, lines: np.ndarray) -> np.ndarray:
    try:
        return tokens.astype(np.int64)
    except ValueError:
        for tok, line in zip(tokens, lines):
            if not tok.isdigit():
                raise DistillrecError(f"{path}: line {line + 1}: expected a count, got {tok.decode()!r}") from None
        raise


def _ids(tokens: np.ndarray) -> np.ndarray:
    """Integer ids when every token is an integer, else the tokens as str (mapped to internal ids later)."""
    if tokens.dtype == np.int64:
        return tokens
    try:
        return tokens.astype(np.int64)
    except (ValueError, OverflowError):
        return np.char.decode(tokens, "utf-8", errors="replace").astype(object)


# -- delimited text -----------------------------------------------------------------------------------------
def read_delimited(
    path: str | os.PathLike,
    *,
    sep: str | None = None,
    columns: dict[str, str | int] | None = None,
    header: bool = True,
) -> pd.DataFrame:
    data = read_bytes(path)
    if not data.strip():
        raise DistillrecError(f"{path}: no interactions")
    sep = sep or _infer_sep(path, data)
    if len(sep) > 1 and sep != r"\s+":
        # pandas' fast C parser takes only one-character separators: swap a multi-character one (``::``) for a
        # control character that cannot occur in the data.
        data = data.replace(sep.encode(), b"\x1f")
        sep = "\x1f"
    try:
        # Only an empty field is missing: "NA" or "null" may well be an id.
        frame = pd.read_csv(
            io.BytesIO(data), sep=sep, header=0 if header else None, engine="c", keep_default_na=False,
            na_values=[""], skipinitialspace=True,
        )
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"line {m.group(1)}: " if m else ""
        raise DistillrecError(f"{path}: {where}malformed line ({e})") from None
    except pd.errors.EmptyDataError:
        raise DistillrecError(f"{path}: no interactions") from None
    mapping = _resolve_columns(path, frame, columns, header)
    out = {}
    for role, col in mapping.items():
        values = frame[col]
        missing = values.isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DistillrecError(f"{path}: line {_line_of_row(data, row, header)}: missing {role} (column {col!r})")
        out[role] = _convert(path, data, header, role, values)
    return pd.DataFrame(out)


def _infer_sep(path: str | os.PathLike, data: bytes) -> str:
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return ","
    if name.endswith((".tsv", ".inter")):
        return "\t"
    first = data.split(b"\n", 1)[0]
    for cand in ("\t", "::", ",", ";", "|"):
        if cand.encode() in first:
            return cand
    return r"\s+"


def _resolve_columns(
    path: str | os.PathLike, frame: pd.DataFrame, columns: dict[str, str | int] | None, header: bool
) -> dict[str, str | int]:
    if columns is not None:
        unknown = set(columns) - set(ROLES)
        if unknown:
            raise DistillrecError(f"unknown column role(s) {sorted(unknown)}; expected some of {', '.join(ROLES)}")
        mapping = dict(columns)
    elif header:
        lower = {str(c).strip().lower(): c for c in frame.columns}
        mapping = {}
        for role, names in _ALIASES.items():
            hit = next((lower[n] for n in names if n in lower), None)
            if hit is not None:
                mapping[role] = hit
    else:
        mapping = dict(zip(("user", "item", "rating", "timestamp"), range(min(4, frame.shape[1]))))
    for role in ("user", "item"):
        if role not in mapping:
            raise DistillrecError(
                f"{path}: no {role} column (columns: {', '.join(map(str, frame.columns))}); pass columns={{...}}"
            )
    for role, col in mapping.items():
        if col not in frame.columns:
            raise DistillrecError(
                f"{path}: no column {col!r} for {role} (columns: {', '.join(map(str, frame.columns))})"
            )
    return mapping


def _convert(path: str | os.PathLike, data: bytes, header: bool, role: str, values: pd.Series) -> np.ndarray:
    """One parsed column → its standard dtype; a value that does not fit is an error naming its line."""
    if role in ("user", "item"):
        return _id_column(values)
    if role == "split":
        stripped = values.astype(str).str.strip()
        bad = np.flatnonzero(~stripped.isin(SPLIT_NAMES).to_numpy())
        if bad.size:
            r = int(bad[0])
            line = _line_of_row(data, r, header)
            raise DistillrecError(f"{path}: line {line}: split {values.iloc[r]!r} is not one of train, valid, test")
        return pd.Categorical(stripped, categories=SPLIT_NAMES)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(numbers))
    if role == "block" and not bad.size:
        bad = np.flatnonzero(numbers != np.round(numbers))
    if bad.size:
        r = int(bad[0])
        kind = "an integer" if role == "block" else "a number"
        raise DistillrecError(f"{path}: line {_line_of_row(data, r, header)}: {role} {values.iloc[r]!r} is not {kind}")
    return numbers.astype(np.int64) if role == "block" else numbers


def _id_column(values: pd.Series) -> np.ndarray:
    """Integer ids stay int64 (also integral floats); anything else is kept as a stripped string."""
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(values):
        arr = values.to_numpy(dtype=np.float64)
        if (arr == np.round(arr)).all():
            return arr.astype(np.int64)
    return values.astype(str).str.strip().to_numpy(dtype=object)


def _line_of_row(data: bytes, row: int, header: bool) -> int:
    """1-based file line of data row ``row`` (pandas skips blank lines). Only runs on the error path."""
    target = row + (1 if header else 0)
    seen = -1
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == target:
                return number
    return target + 1


# -- typed formats ------------------------------------------------------------------------------------------
def _read_recbole(path: str | os.PathLike) -> pd.DataFrame:
    """RecBole atomic file: a tab-separated header of ``name:type`` fields, e.g. ``user_id:token``."""
    data = read_bytes(path)
    first = data.split(b"\n", 1)[0].decode(errors="replace").rstrip("\r")
    fields = first.split("\t")
    names = [f.split(":", 1)[0].strip().lower() for f in fields]
    if not all(":" in f for f in fields):
        raise DistillrecError(f"{path}: line 1: a RecBole header has name:type fields, got {first!r}")
    mapping: dict[str, str | int] = {}
    for role, aliases in _ALIASES.items():
        hit = next((field for name, field in zip(names, fields) if name in aliases), None)
        if hit is not None:
            mapping[role] = hit
    return read_delimited(path, sep="\t", columns=mapping)


def _read_parquet(path: str | os.PathLike, columns: dict[str, str | int] | None) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DistillrecError(f"{path}: no such file")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DistillrecError(f"{path}: not a readable Parquet file ({e})") from None
    mapping = _resolve_columns(path, frame, columns, header=True)
    out = {}
    for role, col in mapping.items():
        values = frame[col]
        missing = values.isna().to_numpy()
        if missing.any():
            raise DistillrecError(f"{path}: row {int(np.flatnonzero(missing)[0])}: missing {role} (column {col!r})")
        if role in ("user", "item"):
            out[role] = _id_column(values)
        elif role == "split":
            if not values.astype(str).isin(SPLIT_NAMES).all():
                raise DistillrecError(f"{path}: split values must be train, valid or test")
            out[role] = pd.Categorical(values.astype(str), categories=SPLIT_NAMES)
        elif role == "timestamp" and pd.api.types.is_datetime64_any_dtype(values):
            out[role] = values.astype("int64").to_numpy() / 1e9
        else:
            out[role] = pd.to_numeric(values).to_numpy(dtype=np.float64)
    return pd.DataFrame(out)
