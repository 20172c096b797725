"""A training process killed with SIGKILL mid-run and resumed with --resume ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ARGS = ["train", "--dataset", "synthetic", "--model", "bpr", "--set", "dataset.n_users=400",
        "--set", "dataset.n_items=300", "--set", "model.embedding_dim=16", "--set", "train.epochs=40",
        "--set", "train.batch_size=64", "--set", "train.learning_rate=0.01", "--set", "train.patience=100"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from distillrec.cli import main; main()", *args]


def _epochs_logged(out: Path) -> int:
    log = out / "log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(*ARGS, "--out", str(full)), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(*ARGS, "--out", str(cut)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _epochs_logged(cut) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _epochs_logged(cut)
    assert 5 <= done < 40, f"the kill should land mid-run (epochs logged: {done})"
    assert not (cut / "results.json").exists()

    res = subprocess.run(_cli(*ARGS, "--out", str(cut), "--resume"), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming after epoch" in res.stderr
    a = json.loads((full / "results.json").read_text())
    b = json.loads((cut / "results.json").read_text())
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert a["train"]["best_epoch"] == b["train"]["best_epoch"]
    log = [json.loads(line) for line in (cut / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 41))
