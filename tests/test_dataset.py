import numpy as np
import pytest
import scipy.sparse as sp

from distillrec.data import Dataset


def _tiny() -> Dataset:
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    return Dataset("tiny", 3, 4, train=train, valid=valid, test=test,
                   user_ids=np.array(["a", "b", "c"]), item_ids=np.array(["w", "x", "y", "z"]))


def test_seen_masks_train_and_other_split():
    ds = _tiny()
    assert ds.seen("test")[0].toarray().tolist() == [[1, 1, 1, 0]]
    assert ds.seen("valid")[0].toarray().tolist() == [[1, 1, 0, 1]]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="train matrix has shape"):
        Dataset("bad", 2, 4, train=sp.csr_matrix((3, 4)), test=sp.csr_matrix((2, 4)))


def test_id_maps_and_fingerprint():
    ds = _tiny()
    assert ds.user_index("b") == 1 and ds.item_index("z") == 3
    with pytest.raises(KeyError, match="user 'q'"):
        ds.user_index("q")
    other = _tiny()
    other.item_ids = np.array(["w", "x", "y", "q"])
    assert ds.fingerprint() != other.fingerprint()


def test_stats_counts():
    s = _tiny().stats()
    assert (s["n_train"], s["n_valid"], s["n_test"], s["n_interactions"]) == (5, 2, 3, 10)
    assert s["density"] == pytest.approx(10 / 12)
