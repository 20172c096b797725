"""SASRec, NextItNet and the sequence batches: causality, padding invariance, leakage, learning."""

import numpy as np
import pytest
import torch

from distillrec.data.sequences import TrainSequences, pad_left, sequence_batches, train_sequences
from distillrec.models import get_model_class
from distillrec.models.nextitnet import NextItNet, NextItNetConfig
from distillrec.models.sasrec import SASRec, SASRecConfig
from distillrec.utils import DistillrecError
from tests.helpers import cycle_dataset, seq_dataset


def _models(n_items: int, max_len: int = 12) -> list:
    torch.manual_seed(0)
    return [
        SASRec(5, n_items, SASRecConfig(hidden_size=16, n_heads=2, inner_size=32, max_len=max_len)),
        NextItNet(5, n_items, NextItNetConfig(embedding_dim=16, dilations=[1, 2], n_blocks=1, max_len=max_len)),
        NextItNet(5, n_items, NextItNetConfig(embedding_dim=16, max_len=max_len, rezero=True)),
    ]


# -- sequences --------------------------------------------------------------------------------------------
def test_pad_left_hand_values():
    out = pad_left([[1, 2, 3], [4], [], np.array([5, 6, 7, 8, 9])], max_len=3, pad_id=10)
    assert out.dtype == torch.long
    assert out.tolist() == [[1, 2, 3], [10, 10, 4], [10, 10, 10], [7, 8, 9]]
    with pytest.raises(ValueError, match="max_len"):
        pad_left([[1]], 0, 10)


def test_train_sequences_hand_values_and_no_leakage():
    # items 8 and 9 are only ever valid/test items; user 2's training history has one item (no target)
    ds = seq_dataset([[0, 1, 2, 8, 9], [3, 4, 5, 6, 7, 0, 1, 9, 8], [5, 9, 8]], n_items=10)
    ts = TrainSequences(ds, max_len=4)
    assert ts.users.tolist() == [0, 1]
    p = 10
    assert ts.input_seq.tolist() == [[p, p, 0, 1], [5, 6, 7, 0]]
    assert ts.target_seq.tolist() == [[p, p, 1, 2], [6, 7, 0, 1]]  # long history: the last max_len targets
    assert ts.n_targets == 6
    for seq in (ts.input_seq, ts.target_seq):
        assert not torch.isin(seq, torch.tensor([8, 9])).any()


def test_batches_shapes_negatives_and_determinism():
    ds = cycle_dataset(n_users=50, n_items=6, length=10)
    g = torch.Generator().manual_seed(3)
    batches = list(sequence_batches(ds, max_len=8, batch_size=16, generator=g, trim=False))
    assert [len(b["users"]) for b in batches] == [16, 16, 16, 2]
    assert sorted(torch.cat([b["users"] for b in batches]).tolist()) == list(range(50))
    for b in batches:
        assert set(b) == {"users", "input_seq", "target_seq", "neg_seq"}
        assert b["input_seq"].shape == b["target_seq"].shape == b["neg_seq"].shape == (len(b["users"]), 8)
        pad = b["target_seq"] == 6
        assert torch.equal(b["neg_seq"] == 6, pad)
        assert not (b["neg_seq"] == b["target_seq"])[~pad].any()
        assert ((b["neg_seq"] >= 0) & (b["neg_seq"] <= 6)).all()
    again = list(sequence_batches(ds, 8, 16, torch.Generator().manual_seed(3), trim=False))
    other = list(sequence_batches(ds, 8, 16, torch.Generator().manual_seed(4), trim=False))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(batches, again) for k in a)
    assert not torch.equal(batches[0]["users"], other[0]["users"])
    assert train_sequences(ds, 8) is train_sequences(ds, 8)  # padding is done once per data set


def test_trim_and_bucket():
    # lengths 3..12 items -> 1..10 training inputs; max_len 8
    seqs = [list(range(n)) for n in range(3, 13)] * 4
    ds = seq_dataset(seqs, n_items=12)
    ts = TrainSequences(ds, 8)
    full = {int(u): (i, t) for b in ts.batches(8, torch.Generator().manual_seed(0), trim=False)
            for u, i, t in zip(b["users"], b["input_seq"], b["target_seq"])}
    widths = []
    for b in ts.batches(8, torch.Generator().manual_seed(0), bucket=True):
        real = (b["input_seq"] != 12).sum(1)
        widths.append(b["input_seq"].shape[1])
        assert widths[-1] == int(real.max())  # trimmed to the longest input in the batch
        for u, i, t in zip(b["users"].tolist(), b["input_seq"], b["target_seq"]):
            assert torch.equal(full[u][0][-len(i):], i) and torch.equal(full[u][1][-len(t):], t)
            assert (full[u][0][: 8 - len(i)] == 12).all()  # only padding was cut
    # 40 users sorted by length into 5 batches: widths 2, 4, 6, 8, 8 (in shuffled order)
    assert sorted(widths) == [2, 4, 6, 8, 8]
    model = _models(12, 8)[1].eval()
    batch = next(ts.batches(40, torch.Generator().manual_seed(0), trim=False))
    cut = {k: v[:, -5:] if v.dim() == 2 else v for k, v in batch.items()}
    short = (batch["input_seq"] != 12).sum(1) <= 5
    with torch.no_grad():
        a, b = model.seq_output(batch["input_seq"])[short, -5:], model.seq_output(cut["input_seq"])[short]
    assert torch.allclose(a, b, atol=1e-5)


def test_negatives_are_uniform_over_non_targets():
    ds = cycle_dataset(n_users=4, n_items=5, length=6)
    ts = train_sequences(ds, 4)
    target = torch.full((20000,), 2)
    counts = torch.bincount(ts.sample_negatives(target, torch.Generator().manual_seed(0)), minlength=5)
    assert counts[2] == 0
    assert torch.allclose(counts[[0, 1, 3, 4]].float() / 20000, torch.full((4,), 0.25), atol=0.02)


def test_bad_item_id_is_named():
    ds = seq_dataset([[0, 1, 2, 3, 4]], n_items=5)
    ds.sequences = [np.array([0, 7, 2, 3, 4])]
    with pytest.raises(ValueError, match=r"user 0 has an item id outside 0\.\.4"):
        TrainSequences(ds, 4)


# -- models -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2])
def test_causal_every_layer(k):
    n_items, max_len = 30, 12
    model = _models(n_items, max_len)[k].eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, n_items, (4, max_len), generator=g)
    x[0, :5] = n_items  # a left-padded row
    with torch.no_grad():
        base = model.hidden_states(x, include_embedding=True)
        for t in (5, 8, 10):
            y = x.clone()
            y[:, t + 1 :] = torch.randint(0, n_items, (4, max_len - t - 1), generator=g)
            for a, b in zip(base, model.hidden_states(y, include_embedding=True)):
                assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
                assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the future does change later outputs
    n_layers = 2 if k == 0 else len(model.config.dilations) * model.config.n_blocks
    assert len(base) == n_layers + 1


@pytest.mark.parametrize("k", [0, 1, 2])
def test_left_padding_does_not_change_last_output(k):
    n_items, max_len = 30, 12
    model = _models(n_items, max_len)[k].eval()
    seq = [3, 7, 7, 1, 20]
    with torch.no_grad():
        alone = model.seq_output(torch.tensor([seq]))[:, -1]
        padded = model.seq_output(pad_left([seq, list(range(12))], max_len, n_items))[:1, -1]
        more = model.seq_output(pad_left([seq], 8, n_items))[:, -1]
    assert torch.allclose(alone, padded, atol=1e-5) and torch.allclose(alone, more, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_scoring_the_newest_position_alone_is_exact(k):
    """user_repr's shortcuts (SASRec: the last block's newest query alone; NextItNet: the columns inside its
    receptive field) give the newest output of the full all-positions pass, padded rows included."""
    n_items, max_len = 30, 40
    model = _models(n_items, max_len)[k].eval()
    seqs = [list(np.random.default_rng(s).integers(0, n_items, size=n)) for s, n in ((0, 40), (1, 5), (2, 33))]
    batch = pad_left(seqs, max_len, n_items)
    with torch.no_grad():
        full = model.seq_output(batch)[:, -1]
        assert torch.allclose(model.output(model.last_hidden(batch)), full, atol=1e-5)
        context = model.context_length() or max_len
        assert torch.allclose(model.output(model.last_hidden(batch[:, -context:])), full, atol=1e-5)


def test_nextitnet_receptive_field():
    # dilations [1, 4] -> convolutions 1, 2, 4, 8 with kernel 3: the last output sees 1 + 2 * 15 = 31 positions
    model = NextItNet(1, 50, NextItNetConfig(embedding_dim=8, dilations=[1, 4], n_blocks=1, max_len=40)).eval()
    assert model.receptive_field == 31
    x = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model.seq_output(x)[0, -1]
        for pos, changes in ((8, False), (9, True)):
            y = x.clone()
            y[0, pos] = (y[0, pos] + 1) % 50
            assert (not torch.allclose(model.seq_output(y)[0, -1], base)) == changes


@pytest.mark.parametrize("name,hp", [
    ("sasrec", {"hidden_size": 32, "n_heads": 2, "inner_size": 64, "dropout": 0.1, "attn_dropout": 0.1}),
    ("sasrec", {"hidden_size": 32, "n_heads": 2, "inner_size": 64, "dropout": 0.1, "loss_type": "bce"}),
    ("nextitnet", {"embedding_dim": 32, "dilations": [1, 2], "n_blocks": 1}),
])
def test_training_learns_the_cycle(name, hp):
    torch.manual_seed(0)
    ds = cycle_dataset()
    model = get_model_class(name).from_dataset(ds, max_len=16, **hp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(12):
        for batch in sequence_batches(ds, 16, 16, g):
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    model.eval()
    model.prepare_eval(ds, "test")
    users = torch.arange(ds.n_users)
    with torch.no_grad():
        scores = model.full_scores(users)
    target = torch.tensor([s[-1] for s in ds.sequences])
    rank = (scores > scores.gather(1, target[:, None])).sum(1)
    assert (rank < 3).float().mean() >= 0.75  # ~90% of next steps follow the cycle


def test_score_agrees_with_full_scores_and_eval_cache():
    ds = cycle_dataset(n_users=10, n_items=15, length=8)
    for model in _models(15, 12):
        with pytest.raises(DistillrecError, match="prepare_eval"):
            model.full_scores(torch.arange(3))
        model.eval()
        model.prepare_eval(ds, "valid")
        assert "eval_seq" not in model.state_dict()
        users = torch.tensor([0, 3, 7])
        with torch.no_grad():
            full = model.full_scores(users)
            assert full.shape == (3, 15)
            items = torch.tensor([[1, 14, 0], [2, 2, 5], [9, 3, 4]])
            assert torch.allclose(model.score(users, items), full.gather(1, items), atol=1e-5)
            assert torch.allclose(model.score(users, items[:, 0]), full.gather(1, items[:, :1])[:, 0], atol=1e-5)
            assert torch.allclose(model.user_repr(users) @ model.item_repr(torch.arange(15)).T, full, atol=1e-5)
            # valid uses seq[:-2] as input, test seq[:-1]: the test ranking sees one more item
            model.prepare_eval(ds, "test")
            assert not torch.allclose(model.full_scores(users), full)
            logits = model.logits(model.eval_seq[users])
            assert torch.allclose(logits[:, -1], model.full_scores(users), atol=1e-5)
        model.train()
        assert model.eval_seq is None


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible"):
        SASRec(1, 10, SASRecConfig(hidden_size=10, n_heads=3))
    with pytest.raises(ValueError, match="max_len"):
        SASRec(1, 10, SASRecConfig(max_len=4)).hidden_states(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="hiden_size"):
        get_model_class("sasrec").Config(hiden_size=3)
    with pytest.raises(ValueError, match="dilations"):
        NextItNet(1, 10, NextItNetConfig(dilations=[]))


def test_empty_history_scores_are_finite():
    ds = seq_dataset([[1, 2], [3, 4, 5, 6]], n_items=8)  # user 0 has no input when predicting valid
    for model in _models(8, 6):
        model.eval()
        model.prepare_eval(ds, "valid")
        with torch.no_grad():
            assert torch.isfinite(model.full_scores(torch.tensor([0]))).all()
            assert torch.isfinite(model.full_scores(torch.tensor([0, 1]))).all()
