"""The download path against a local HTTP server (no outside network)."""

import dataclasses
import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from distillrec.data import registry
from distillrec.data.download import Download, extract, fetch
from distillrec.utils import DistillrecError

U_DATA = "1\t10\t5\t881250949\n1\t11\t4\t881250950\n2\t10\t3\t881250951\n2\t12\t5\t881250952\n"


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1 in a thread; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _patch_ml100k(monkeypatch, url, checksum):
    spec = dataclasses.replace(registry.REGISTRY["ml-100k"], download=Download(url, checksum))
    monkeypatch.setitem(registry.REGISTRY, "ml-100k", spec)


def test_first_use_downloads_verifies_and_extracts(server, tmp_path, monkeypatch):
    www, base = server
    blob = _zip({"ml-100k/u.data": U_DATA, "ml-100k/README": "readme"})
    (www / "ml-100k.zip").write_bytes(blob)
    _patch_ml100k(monkeypatch, f"{base}/ml-100k.zip", "md5:" + hashlib.md5(blob).hexdigest())
    root = tmp_path / "data"
    ds = registry.load_dataset("ml-100k", data_dir=root, rating_threshold=None)
    assert (ds.n_users, ds.n_items, ds.stats()["n_interactions"]) == (2, 3, 4)
    assert sorted(p.name for p in (root / "ml-100k").iterdir()) == ["README", "u.data"]  # zip removed
    # second use: files are there, the server is not asked again
    (www / "ml-100k.zip").unlink()
    assert registry.load_dataset("ml-100k", data_dir=root, rating_threshold=None).n_users == 2


def test_wrong_checksum_fails_and_leaves_no_file(server, tmp_path, monkeypatch):
    www, base = server
    (www / "ml-100k.zip").write_bytes(_zip({"ml-100k/u.data": U_DATA}))
    _patch_ml100k(monkeypatch, f"{base}/ml-100k.zip", "md5:" + "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DistillrecError, match=r"checksum mismatch .* the file was not kept"):
        registry.load_dataset("ml-100k", data_dir=root)
    assert list((root / "ml-100k").iterdir()) == []


def test_sha256_and_unreachable_url(server, tmp_path):
    www, base = server
    (www / "f.bin").write_bytes(b"hello")
    dest = fetch(f"{base}/f.bin", tmp_path / "f.bin", "sha256:" + hashlib.sha256(b"hello").hexdigest(),
                 progress=False)
    assert dest.read_bytes() == b"hello"
    with pytest.raises(DistillrecError, match="could not download"):
        fetch(f"{base}/missing.bin", tmp_path / "m.bin", "md5:" + "0" * 32, progress=False)
    assert not (tmp_path / "m.bin").exists()
    with pytest.raises(ValueError, match="checksum must look like"):
        fetch(f"{base}/f.bin", tmp_path / "g.bin", "crc32:1234")


def test_offline_message_says_where_to_put_the_files(tmp_path):
    with pytest.raises(DistillrecError) as err:
        registry.load_dataset("ml-100k", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "ml-100k") in msg and "u.data (or u.data.gz)" in msg and "DISTILLREC_DATA_DIR" in msg
    assert "files.grouplens.org" in msg


def test_extract_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"../escape.txt": "x"}))
    with pytest.raises(DistillrecError, match="would land outside"):
        extract(archive, tmp_path / "out", strip_top=False)
    assert not (tmp_path / "escape.txt").exists()
