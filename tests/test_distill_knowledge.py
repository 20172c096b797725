"""Teacher knowledge: top-N lists against a brute-force sort, both item-side paths, and the disk cache."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data.dataset import Dataset
from distillrec.distill.knowledge import (
    KnowledgeSpec,
    TeacherKnowledge,
    compute_knowledge,
    load_or_compute_knowledge,
)
from distillrec.models.bpr import BPR
from distillrec.utils import DistillrecError


def random_dataset(n_users: int = 23, n_items: int = 31, density: float = 0.2, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    train = sp.csr_matrix((rng.random((n_users, n_items)) < density).astype(np.float32))
    return Dataset("rand", n_users, n_items, train=train, test=sp.csr_matrix((n_users, n_items)))


class BiasedMF(BPR):
    """A score that is *not* the dot product of the representations: forces the generic item-side path."""

    def __init__(self, n_users: int, n_items: int, config=None) -> None:
        super().__init__(n_users, n_items, config)
        self.item_bias = torch.nn.Parameter(torch.randn(n_items))

    def score(self, users, items):
        return super().score(users, items) + self.item_bias[items]

    def full_scores(self, users):
        return super().full_scores(users) + self.item_bias


def brute_force(teacher, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Dense scores (tiny case only), train masked, sorted: per-user items and per-item users."""
    with torch.no_grad():
        dense = teacher.full_scores(torch.arange(ds.n_users)).numpy().astype(np.float64)
    dense[ds.train.toarray() > 0] = -np.inf
    return np.argsort(-dense, axis=1, kind="stable"), np.argsort(-dense.T, axis=1, kind="stable")


@pytest.mark.parametrize("model_cls", [BPR, BiasedMF])
def test_topn_lists_equal_brute_force_sort(model_cls):
    ds = random_dataset()
    torch.manual_seed(0)
    teacher = model_cls(ds.n_users, ds.n_items, BPR.Config(embedding_dim=6, init_std=1.0))
    spec = KnowledgeSpec(n_user_topk=7, n_item_topk=5, reprs=True)
    # chunk_elems = 64 forces several user chunks and item chunks (and several merges on the generic path).
    known = compute_knowledge(teacher, ds, spec, chunk_elems=64)
    by_user, by_item = brute_force(teacher, ds)
    assert known.user_topk.tolist() == by_user[:, :7].tolist()
    assert known.item_topk.tolist() == by_item[:, :5].tolist()
    with torch.no_grad():
        s = teacher.score(torch.arange(ds.n_users).repeat_interleave(7), known.user_topk.reshape(-1))
    torch.testing.assert_close(known.user_topk_scores, s.view(-1, 7))
    train = ds.train.toarray() > 0
    assert not train[np.arange(ds.n_users)[:, None], known.user_topk.numpy()].any()
    assert not train[known.item_topk.numpy(), np.arange(ds.n_items)[:, None]].any()
    torch.testing.assert_close(known.user_repr, teacher.user_emb.weight.detach())
    torch.testing.assert_close(known.item_repr, teacher.item_emb.weight.detach())


def test_dot_and_generic_item_paths_agree():
    ds = random_dataset(seed=1)
    torch.manual_seed(1)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=1.0))
    spec = KnowledgeSpec(n_item_topk=6)
    dot = compute_knowledge(teacher, ds, spec, chunk_elems=100, item_side="dot")
    generic = compute_knowledge(teacher, ds, spec, chunk_elems=100, item_side="full_scores")
    assert dot.item_topk.tolist() == generic.item_topk.tolist()
    torch.testing.assert_close(dot.item_topk_scores, generic.item_topk_scores)
    assert dot.user_topk is None and dot.user_repr is None


def test_list_is_cut_when_a_row_has_too_few_unobserved_entries():
    train = np.zeros((3, 6), dtype=np.float32)
    train[0, :4] = 1  # user 0 has only 2 unobserved items
    ds = Dataset("cut", 3, 6, train=sp.csr_matrix(train), test=sp.csr_matrix((3, 6)))
    teacher = BPR(3, 6, BPR.Config(embedding_dim=2))
    with pytest.warns(UserWarning, match="cut from 4 to 2"):
        known = compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=4))
    assert known.user_topk.shape == (3, 2)
    assert set(known.user_topk[0].tolist()) == {4, 5}


def test_cache_hit_miss_and_corruption(tmp_path):
    ds = random_dataset(seed=2)
    torch.manual_seed(2)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4))
    spec = KnowledgeSpec(n_user_topk=5, reprs=True)
    first = load_or_compute_knowledge(teacher, ds, spec, cache_dir=tmp_path)
    assert not first.from_cache
    files = list(tmp_path.glob("teacher-knowledge-*.pt"))
    assert len(files) == 1
    second = load_or_compute_knowledge(teacher, ds, spec, cache_dir=tmp_path)
    assert second.from_cache and second.key == first.key
    for name, t in first.tensors().items():
        assert torch.equal(t, second.tensors()[name])
    # Another N is another key; so is a changed teacher.
    assert not load_or_compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=6), cache_dir=tmp_path).from_cache
    with torch.no_grad():
        teacher.user_emb.weight[0, 0] += 1.0
    changed = load_or_compute_knowledge(teacher, ds, spec, cache_dir=tmp_path)
    assert not changed.from_cache and changed.key != first.key
    assert len(list(tmp_path.glob("teacher-knowledge-*.pt"))) == 3
    # A truncated file is a miss with a warning, then rewritten.
    path = tmp_path / f"teacher-knowledge-{changed.key}.pt"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_or_compute_knowledge(teacher, ds, spec, cache_dir=tmp_path)
    assert not again.from_cache
    assert load_or_compute_knowledge(teacher, ds, spec, cache_dir=tmp_path).from_cache


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a distillrec teacher-knowledge file"):
        TeacherKnowledge.load(path)


def test_lists_with_ties_do_not_depend_on_blocks_or_threads():
    """Equal scores (duplicated item vectors) are ordered by the lower id on every path, so the short list is
    a prefix of the long one and blocks or threads change nothing."""
    ds = random_dataset(n_users=40, n_items=300, density=0.05, seed=3)
    torch.manual_seed(3)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=3, init_std=1.0))
    with torch.no_grad():
        teacher.item_emb.weight[100:200] = teacher.item_emb.weight[:100]  # items i and i + 100 tie everywhere
        teacher.user_emb.weight[20:] = teacher.user_emb.weight[:20]  # and users u and u + 20, across blocks
    spec = KnowledgeSpec(n_user_topk=150, n_item_topk=12)
    one = compute_knowledge(teacher, ds, spec, chunk_elems=2000, threads=1)
    two = compute_knowledge(teacher, ds, spec, chunk_elems=700, threads=2, item_side="full_scores")
    three = compute_knowledge(teacher, ds, spec, chunk_elems=3000, threads=3, item_side="full_scores")
    by_user, by_item = brute_force(teacher, ds)
    for known in (one, two, three):
        assert known.user_topk.tolist() == by_user[:, :150].tolist()
        assert known.item_topk.tolist() == by_item[:, :12].tolist()
    threads = torch.get_num_threads()
    short = compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=10))
    assert torch.equal(short.user_topk, one.user_topk[:, :10])
    assert torch.get_num_threads() == threads  # the one-off step's thread setting is restored


def test_dot_is_refused_for_a_teacher_whose_scores_are_not_dot_products():
    ds = random_dataset(seed=4)
    teacher = BiasedMF(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=1.0))
    with pytest.raises(DistillrecError, match="not the dot products"):
        compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=3), item_side="dot")


def test_a_cached_longer_list_serves_a_shorter_one(tmp_path):
    ds = random_dataset(seed=5)
    torch.manual_seed(5)
    teacher = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=1.0))
    long = load_or_compute_knowledge(teacher, ds, KnowledgeSpec(n_user_topk=8, n_item_topk=6, reprs=True), tmp_path)
    short_spec = KnowledgeSpec(n_user_topk=3)
    short = load_or_compute_knowledge(teacher, ds, short_spec, tmp_path)
    assert short.from_cache and short.item_topk is None and short.user_repr is None
    direct = compute_knowledge(teacher, ds, short_spec)
    assert torch.equal(short.user_topk, direct.user_topk) and torch.equal(short.user_topk, long.user_topk[:, :3])
    torch.testing.assert_close(short.user_topk_scores, direct.user_topk_scores)
    assert len(list(tmp_path.glob("teacher-knowledge-*.pt"))) == 1  # nothing new written
    # Longer than any cached list, or another teacher: computed.
    assert not load_or_compute_knowledge(teacher, ds, KnowledgeSpec(n_item_topk=7), tmp_path).from_cache
    other = BPR(ds.n_users, ds.n_items, BPR.Config(embedding_dim=4, init_std=1.0))
    assert not load_or_compute_knowledge(other, ds, short_spec, tmp_path).from_cache
