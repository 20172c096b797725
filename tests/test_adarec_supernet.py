"""AdaRec search space: causality of every op and of the super-net, faithful leaks, measured costs, Gumbel-ST,
derivation and warm start."""

import warnings

import pytest
import torch
from pydantic import ValidationError

from distillrec.distill.adarec import op_cost_vector
from distillrec.models.supernet import (
    CAUSAL_OPS,
    FAITHFUL_OPS,
    OPS,
    AdaRecStudent,
    StudentConfig,
    SuperNet,
    SuperNetConfig,
    count_macs,
    edge_list,
    gumbel_softmax_st,
    make_op,
    measure_op_costs,
)

N_ITEMS = 30


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _future_changes(fn, length: int = 9, channels: int = 4) -> list[bool]:
    """For each t: does perturbing x[:, t+1:] change the output at positions <= t?"""
    torch.manual_seed(0)
    x = torch.rand(2, length, channels)
    base = fn(x)
    out = []
    for t in range(length - 1):
        y = x.clone()
        y[:, t + 1 :] = torch.rand(2, length - t - 1, channels) * 3
        out.append(not torch.allclose(fn(y)[:, : t + 1], base[:, : t + 1], atol=1e-6))
    return out


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_sees_the_future_exactly_when_not_causal(name):
    op = make_op(name, 4, norm="batch" if name in FAITHFUL_OPS else "layer").eval()
    changes = _future_changes(lambda x: op(torch.relu(x)))
    if OPS[name].causal:
        assert not any(changes), f"{name} reads future positions"
    else:
        assert any(changes), f"{name} should see the next positions (the authors' symmetric padding)"
    assert op(torch.rand(3, 7, 4)).shape == (3, 7, 4)


@pytest.mark.parametrize("name", sorted(n for n in OPS if OPS[n].kind != "zero"))
def test_each_op_equals_the_pytorch_layer_on_the_padded_sequence(name):
    """The [B, L, C] implementations (one GEMM over shifted taps, pools as element-wise maxima / sums) give the
    values of Conv1d / MaxPool1d / AvgPool1d applied to the zero-padded [B, C, L] sequence."""
    torch.manual_seed(1)
    spec, c = OPS[name], 5
    op = make_op(name, c, norm="layer").eval()
    x = torch.relu(torch.randn(3, 11, c))
    width = (spec.kernel - 1) * spec.dilation
    left = width if spec.causal else width // 2
    xp = torch.nn.functional.pad(x.transpose(1, 2), (left, width - left))  # [B, C, L + width]
    if spec.kind == "conv":
        ref = op.norm(torch.nn.functional.conv1d(xp, op.conv.weight, op.conv.bias, dilation=spec.dilation)
                      .transpose(1, 2))
    elif spec.kind == "max":
        ref = torch.nn.functional.max_pool1d(xp, spec.kernel, stride=1).transpose(1, 2)
    elif spec.kind == "avg":
        ref = torch.nn.functional.avg_pool1d(xp, spec.kernel, stride=1).transpose(1, 2)
    else:
        ref = x
    for grad in (True, False):  # max pooling takes PyTorch's kernel when training, chained maxima when scoring
        with torch.set_grad_enabled(grad):
            assert torch.allclose(op(x), ref, atol=1e-5), (name, grad)


def _seq_batch(n: int = 3, length: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, N_ITEMS, (n, length), generator=g)
    seq[0, :3] = N_ITEMS  # left padding in one row
    return seq


def _seq_future_changes(net, arch) -> list[bool]:
    seq = _seq_batch()
    base = net.encode(seq, arch)[-1]
    changes = []
    for t in range(3, seq.shape[1] - 1):
        s2 = seq.clone()
        s2[:, t + 1 :] = (s2[:, t + 1 :] + 7) % N_ITEMS
        changes.append(not torch.allclose(net.encode(s2, arch)[-1][:, : t + 1], base[:, : t + 1], atol=1e-5))
    return changes


def test_supernet_is_causal_with_every_op_active_and_padding_invariant():
    torch.manual_seed(0)
    net = SuperNet(4, N_ITEMS, SuperNetConfig(embedding_dim=8, n_cells=2, dropout=0.0, max_len=12))
    arch = torch.full((6, len(CAUSAL_OPS)), 1.0 / len(CAUSAL_OPS))  # every op contributes
    net.train()
    assert not any(_seq_future_changes(net, arch))
    # a sampled (training) architecture too
    assert not any(_seq_future_changes(net, net.sample_arch().detach()))
    # outputs at real positions do not depend on how much left padding precedes them
    seq = _seq_batch()[1:]
    padded = torch.cat([torch.full((2, 2), N_ITEMS), seq], 1)
    assert torch.allclose(net.encode(padded, arch)[-1][:, 2:], net.encode(seq, arch)[-1], atol=1e-5)


def test_faithful_supernet_warns_and_leaks_the_future():
    with pytest.warns(UserWarning, match="leak"):
        net = SuperNet(4, N_ITEMS, SuperNetConfig(embedding_dim=8, n_cells=2, dropout=0.0, max_len=12, faithful=True))
    assert net.op_names == list(FAITHFUL_OPS)
    net.eval()  # BatchNorm with running statistics: the leak below comes from the windows, not the batch
    arch = torch.full((6, len(FAITHFUL_OPS)), 0.1)
    assert any(_seq_future_changes(net, arch))


def test_faithful_network_is_the_authors_untied_head_and_unmasked_padding():
    """Spec §3.2: no final Linear, an untied Linear(d, n_items + 1) with a bias scores the items, and padding is
    never zeroed, so the newest output depends on the left padding: scoring and training keep max_len columns."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="faithful"):
        student = AdaRecStudent(4, N_ITEMS, StudentConfig(embedding_dim=8, n_cells=2, max_len=12, dropout=0.0,
                                                          genotype=["std_cnn_3"] * 6, faithful=True)).eval()
    plain = AdaRecStudent(4, N_ITEMS, StudentConfig(embedding_dim=8, n_cells=2, max_len=12, dropout=0.0,
                                                    genotype=["conv_3"] * 6))
    assert student.head.weight.shape == (N_ITEMS + 1, 8) and student.head.bias.shape == (N_ITEMS + 1,)
    assert not hasattr(student, "final_layer") and not hasattr(plain, "head")
    # the head is an item table: parameters outside the item tables are the cells' alone in both networks
    cells = sum(p.numel() for p in student.cells.parameters())
    assert student.non_embedding_parameters() == cells
    assert plain.non_embedding_parameters() == sum(p.numel() for p in plain.cells.parameters()) + 8 * 9
    seq = torch.tensor([[N_ITEMS] * 9 + [3, 7, 1], [N_ITEMS] * 7 + [2, 5, 5, 9, 4]])
    with torch.no_grad():
        student.position_embedding.weight.normal_()  # trained-size positions (the N(0, 0.02) init is faint)
        h = student.seq_output(seq)[:, -1]
        w, b = student.head.weight[:N_ITEMS], student.head.bias[:N_ITEMS]
        assert torch.allclose(student.item_logits(h), h @ w.T + b)
        # padding carries position embeddings through the cells: cutting it off changes the newest output
        assert not torch.allclose(student.seq_output(seq[:, -5:])[:, -1], h, atol=1e-5)
        assert student.encode(seq)[0][0, :9].abs().sum() > 0  # the padding columns are not zeroed
        student.eval_seq = seq
        users = torch.arange(2)
        assert torch.allclose(student.full_scores(users), student.item_logits(h), atol=1e-5)  # all 12 columns
        assert torch.allclose(student.score(users, torch.tensor([3, 9])), student.item_logits(h)[users, [3, 9]],
                              atol=1e-5)
    assert plain.padding_is_inert and not student.padding_is_inert


def test_non_causal_ops_need_faithful():
    with pytest.raises(ValidationError, match="future positions"):
        SuperNetConfig(ops=["conv_3", "std_cnn_3"])
    with pytest.raises(ValidationError, match="unknown operation"):
        SuperNetConfig(ops=["conv_3", "conv_7"])
    with pytest.raises(ValidationError, match="6 edges"):
        StudentConfig(genotype=["conv_3"] * 5)


def test_measured_costs_match_a_direct_count():
    c, length = 8, 10
    costs = measure_op_costs(list(OPS), c, length)
    for name, spec in OPS.items():
        op = make_op(name, c)
        assert costs[name]["params"] == sum(p.numel() for p in op.parameters())
        if spec.kind == "conv":
            k = spec.kernel
            # conv weight k·C² + bias C + LayerNorm 2C; MACs: L·C·(C·k + 1 bias) + LayerNorm 2·L·C
            assert costs[name]["params"] == k * c * c + c + 2 * c
            assert costs[name]["macs"] == length * c * (c * k + 1) + 2 * length * c
        elif spec.kind in ("max", "avg"):
            assert costs[name] == {"params": 0, "macs": length * c * 3}
        else:
            assert costs[name] == {"params": 0, "macs": 0}
    assert costs["conv_3"] == {"params": 216, "macs": 2160}
    assert costs["conv_5"] == {"params": 344, "macs": 3440}
    net = SuperNet(4, N_ITEMS, SuperNetConfig(embedding_dim=c, max_len=length))
    assert net.op_params.tolist() == [costs[n]["params"] for n in CAUSAL_OPS]
    rel = op_cost_vector(net.op_params, net.op_macs, net.op_names, "relative")
    assert rel[CAUSAL_OPS.index("conv_5")] == pytest.approx(1.0)
    assert rel[CAUSAL_OPS.index("skip_connect")] == 0.0
    assert rel[CAUSAL_OPS.index("conv_3")] == pytest.approx(0.5 * (216 / 344 + 2160 / 3440))


def test_derived_student_macs_are_the_sum_of_its_ops():
    c, length, genotype = 8, 10, ["conv_3", "skip_connect", "max_pool_3", "none", "dil_conv_5", "conv_5"]
    student = AdaRecStudent(4, N_ITEMS, StudentConfig(embedding_dim=c, max_len=length, genotype=genotype))
    costs = measure_op_costs(genotype, c, length)
    seq = torch.arange(length)[None]
    macs = count_macs(student, lambda: student.seq_output(seq))
    per_cell = sum(costs[g]["macs"] for g in genotype) + 2 * length * c  # + the cell's LayerNorm
    assert macs == student.config.n_cells * per_cell + length * c * (c + 1)  # + the final Linear


@pytest.mark.parametrize("genotype, per_cell", [
    (["conv_3", "max_pool_3", "max_pool_3", "skip_connect", "skip_connect", "avg_pool_3"], 6),  # Beauty's cell
    (["conv_3", "skip_connect", "max_pool_3", "none", "dil_conv_5", "conv_5"], 10),  # 0 →(2) 1 →(8) 3
    # a none edge passes no reach on: 0 →(2) 1 →(0) 3 is the longest path, not 1 →none 2 →(2) 3
    (["conv_3", "skip_connect", "none", "none", "skip_connect", "avg_pool_3"], 2),
])
def test_scoring_reads_only_the_receptive_field(genotype, per_cell):
    """The newest output depends on exactly the last context_length() positions: trimming the sequence to them
    changes nothing, one position fewer does (the bound is tight), so scoring may drop the rest."""
    torch.manual_seed(0)
    cfg = StudentConfig(embedding_dim=6, n_cells=2, max_len=40, genotype=genotype, dropout=0.0)
    student = AdaRecStudent(4, N_ITEMS, cfg).eval()
    context = student.context_length()
    assert context == 1 + 2 * per_cell
    seq = torch.randint(0, N_ITEMS, (3, 40))
    with torch.no_grad():
        full = student.seq_output(seq)[:, -1]
        assert torch.allclose(student.seq_output(seq[:, -context:])[:, -1], full, atol=1e-5)
        assert not torch.allclose(student.seq_output(seq[:, -(context - 1):])[:, -1], full, atol=1e-5)
        # scoring's pass, each cell on fewer columns than the one before it, padded rows included
        seq[1, :25] = N_ITEMS
        seq[2, :-3] = N_ITEMS
        full = student.seq_output(seq)[:, -1]
        assert torch.allclose(student.output(student.last_hidden(seq)), full, atol=1e-5)
        assert torch.allclose(student.output(student.last_hidden(seq[:, -context:])), full, atol=1e-5)
    faithful = StudentConfig(embedding_dim=6, genotype=["std_cnn_3"] * 6, faithful=True)
    with pytest.warns(UserWarning, match="faithful"):
        assert AdaRecStudent(4, N_ITEMS, faithful).context_length() is None  # non-causal ops: no trimming


def test_gumbel_straight_through_one_hot_forward_soft_backward():
    torch.manual_seed(0)
    logits = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(6, 8)
    y = gumbel_softmax_st(logits, 0.5, generator=torch.Generator().manual_seed(3))
    assert ((y != 0).sum(1) == 1).all()
    assert torch.allclose(y.detach().sum(1), torch.ones(6))
    (y * w).sum().backward()
    # the same noise, the soft sample: its gradient is what the hard sample passes back
    ref = logits.detach().clone().requires_grad_(True)
    u = torch.rand(6, 8, generator=torch.Generator().manual_seed(3))
    soft = torch.softmax((ref - torch.log(-torch.log(u))) / 0.5, -1)
    assert torch.equal(y.detach().argmax(1), soft.detach().argmax(1))
    (soft * w).sum().backward()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-6)
    assert ((logits.grad != 0).sum(1) > 1).all()  # soft: every op of an edge gets a gradient


def test_alpha_gets_gradients_through_the_supernet():
    torch.manual_seed(0)
    net = SuperNet(4, N_ITEMS, SuperNetConfig(embedding_dim=8, n_cells=2, max_len=12)).train()
    seq = _seq_batch()
    net.seq_output(seq).sum().backward()
    assert net.alpha.grad is not None and (net.alpha.grad != 0).sum() > net.alpha.shape[0]


def test_derive_picks_the_argmax_and_warm_start_reproduces_the_supernet():
    torch.manual_seed(0)
    net = SuperNet(4, N_ITEMS, SuperNetConfig(embedding_dim=8, max_len=12))
    want = ["conv_5", "none", "skip_connect", "avg_pool_3", "dil_conv_3", "conv_3"]
    with torch.no_grad():
        net.alpha.zero_()
        for e, name in enumerate(want):
            net.alpha[e, CAUSAL_OPS.index(name)] = 0.5
    assert net.derive() == want
    assert edge_list(3) == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    net.set_temperature(1e-3)
    with torch.no_grad():
        net.alpha.mul_(100)  # a gap of 50 nats: the Gumbel noise cannot beat it
    assert torch.equal(net.sample_arch().argmax(1), net.alpha.argmax(1))
    student = AdaRecStudent(4, N_ITEMS, StudentConfig(embedding_dim=8, max_len=12, genotype=net.derive()))
    assert student.warm_start(net) == len(student.state_dict())
    net.eval()
    student.eval()
    seq = _seq_batch()
    assert torch.allclose(net.seq_output(seq), student.seq_output(seq), atol=1e-6)
    assert student.num_parameters() < net.num_parameters()


def test_faithful_training_batches_keep_max_len_columns():
    """Unmasked padding makes outputs depend on the left padding, so faithful training sees every sequence at
    max_len columns, as scoring does; the causal networks cut each batch to its longest history."""
    from distillrec.config import TrainConfig
    from distillrec.train.trainer import Trainer
    from tests.helpers import cycle_dataset

    ds = cycle_dataset(n_users=16, n_items=N_ITEMS, length=6)
    widths = {}
    for faithful in (False, True):
        cfg = StudentConfig(embedding_dim=8, n_cells=1, max_len=12, genotype=["conv_3"] * 6, faithful=faithful)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = Trainer(AdaRecStudent(ds.n_users, N_ITEMS, cfg), ds, TrainConfig(batch_size=8), progress=False)
        widths[faithful] = {b["input_seq"].shape[1] for b in trainer.batches.epoch(torch.Generator().manual_seed(0))}
    assert widths == {False: {3}, True: {12}}
