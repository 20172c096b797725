import gzip

import numpy as np
import pandas as pd
import pytest

from distillrec.data import read_interactions
from distillrec.utils import DistillrecError


def _write(path, text: str, gz: bool = False):
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_csv_with_header_and_column_mapping(tmp_path):
    f = _write(tmp_path / "r.csv", "uid,movie,stars,when\n1,10,4.5,100\n2,10,3,200\n1,11,5,300\n")
    df = read_interactions(f, columns={"user": "uid", "item": "movie", "rating": "stars", "timestamp": "when"})
    assert df["user"].tolist() == [1, 2, 1] and df["item"].tolist() == [10, 10, 11]
    assert df["rating"].tolist() == [4.5, 3.0, 5.0] and df["timestamp"].tolist() == [100, 200, 300]
    assert df["user"].dtype == np.int64


def test_header_names_are_recognised_without_mapping(tmp_path):
    f = _write(tmp_path / "r.tsv", "user_id\titem_id\trating\n7\t8\t1\n")
    df = read_interactions(f)
    assert df.to_dict("list") == {"user": [7], "item": [8], "rating": [1.0]}


@pytest.mark.parametrize("sep", [";", "|", "::", " "])
def test_any_separator_without_header(tmp_path, sep):
    f = _write(tmp_path / "x.dat", f"1{sep}2{sep}5\n3{sep}4{sep}1\n")
    df = read_interactions(f, "delimited", sep=sep, header=False)
    assert df["user"].tolist() == [1, 3] and df["item"].tolist() == [2, 4] and df["rating"].tolist() == [5.0, 1.0]


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    plain = _write(tmp_path / "u.data", "1\t2\t5\t881250949\n")
    hidden = _write(tmp_path / "seq.txt", "u1 a b c\n", gz=True)  # gzip content, no .gz suffix
    assert read_interactions(plain)["timestamp"].tolist() == [881250949.0]
    df = read_interactions(hidden, "sequence")
    assert df["user"].tolist() == ["u1"] * 3 and df["item"].tolist() == ["a", "b", "c"]


def test_movielens_formats(tmp_path):
    dat = _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n", gz=True)
    df = read_interactions(dat)
    assert df["item"].tolist() == [1193, 661] and df["rating"].tolist() == [5.0, 3.0]
    udata = _write(tmp_path / "u.data.gz", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n", gz=True)
    assert read_interactions(udata)["user"].tolist() == [196, 186]


def test_recbole_atomic_file(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu7\ti9\t4\t10\nu8\ti9\t2\t11\n"
    df = read_interactions(_write(tmp_path / "ml.inter", text))
    assert df["user"].tolist() == ["u7", "u8"] and df["rating"].tolist() == [4.0, 2.0]
    assert df["timestamp"].tolist() == [10.0, 11.0]


def test_parquet_with_mapping(tmp_path):
    f = tmp_path / "x.parquet"
    pd.DataFrame({"who": ["a", "b"], "what": [3, 4], "ts": pd.to_datetime([0, 10**9], unit="ns")}).to_parquet(f)
    df = read_interactions(f, columns={"user": "who", "item": "what", "timestamp": "ts"})
    assert df["user"].tolist() == ["a", "b"] and df["item"].tolist() == [3, 4]
    assert df["timestamp"].tolist() == [0.0, 1.0]


def test_adjacency_and_sequence_lines_keep_order(tmp_path):
    f = _write(tmp_path / "train.txt", "0 5 3 9\n1 2\n\n2 7 7 1  \n")
    df = read_interactions(f, "adjacency")
    assert df["user"].tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert df["item"].tolist() == [5, 3, 9, 2, 7, 7, 1]  # file order kept, repeats kept
    huge = _write(tmp_path / "big.txt", "0 99999999999999999999 1\n")  # beyond int64: kept as strings
    assert read_interactions(huge, "adjacency")["item"].tolist() == ["99999999999999999999", "1"]


def test_citeulike_users_dat_user_is_line_number(tmp_path):
    df = read_interactions(_write(tmp_path / "users.dat", "2 10 11\n1 12\n3 10 13 14\n"))
    assert df["user"].tolist() == [0, 0, 1, 2, 2, 2] and df["item"].tolist() == [10, 11, 12, 10, 13, 14]


def test_citeulike_count_mismatch_names_file_and_line(tmp_path):
    f = _write(tmp_path / "users.dat", "2 10 11\n1 12\n3 10 13\n")
    with pytest.raises(DistillrecError, match=r"users\.dat: line 3: says 3 items but lists 2"):
        read_interactions(f)


def test_presplit_and_block_files(tmp_path):
    pre = _write(tmp_path / "split.tsv", "user\titem\tsplit\n0\t1\ttrain\n0\t2\ttest\n1\t2\tvalid\n")
    df = read_interactions(pre, "presplit")
    assert df["split"].tolist() == ["train", "test", "valid"] and df["split"].cat.codes.tolist() == [0, 2, 1]
    blocks = _write(tmp_path / "blocks.tsv", "block\tsplit\tuser\titem\n0\ttrain\t0\t1\n1\ttest\t2\t3\n")
    df = read_interactions(blocks, "blocks")
    assert df["block"].tolist() == [0, 1] and df["user"].tolist() == [0, 2]


def test_bad_split_value_names_line(tmp_path):
    f = _write(tmp_path / "split.tsv", "user\titem\tsplit\n0\t1\ttrain\n0\t2\ttset\n")
    with pytest.raises(DistillrecError, match=r"split\.tsv: line 3: split 'tset'"):
        read_interactions(f, "presplit")


def test_non_numeric_ids_are_kept_as_strings(tmp_path):
    f = _write(tmp_path / "r.csv", "user,item\nalice,tt0111161\nbob,42\n")
    df = read_interactions(f)
    assert df["user"].tolist() == ["alice", "bob"] and df["item"].tolist() == ["tt0111161", "42"]


def test_malformed_lines_name_file_and_line(tmp_path):
    # one field too many on line 4 (the blank line 3 still counts as a line)
    f = _write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n\n4,5,6,7\n")
    with pytest.raises(DistillrecError, match=r"r\.csv: line 4: malformed"):
        read_interactions(f)
    # a field missing on line 4
    f = _write(tmp_path / "m.csv", "user,item,rating\n1,2,3\n\n4,,6\n")
    with pytest.raises(DistillrecError, match=r"m\.csv: line 4: missing item"):
        read_interactions(f)
    # a rating that is not a number on line 5
    f = _write(tmp_path / "u.data", "1\t2\t3\t9\n2\t2\t3\t9\n\n\n3\t4\tfive\t9\n")
    with pytest.raises(DistillrecError, match=r"u\.data: line 5: rating 'five' is not a number"):
        read_interactions(f)


def test_missing_file_unknown_format_and_missing_columns(tmp_path):
    with pytest.raises(DistillrecError, match=r"nope\.csv: no such file"):
        read_interactions(tmp_path / "nope.csv")
    f = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(DistillrecError, match="unknown format 'xml'"):
        read_interactions(f, "xml")
    with pytest.raises(DistillrecError, match="no user column"):
        read_interactions(f)
    with pytest.raises(DistillrecError, match="no column 'rating' for rating"):
        read_interactions(f, columns={"user": "a", "item": "b", "rating": "rating"})
    with pytest.raises(DistillrecError, match="cannot tell the format"):
        read_interactions(_write(tmp_path / "data.bin", "1 2\n"))
    with pytest.raises(DistillrecError, match="no interactions"):
        read_interactions(_write(tmp_path / "empty.csv", "\n"))
