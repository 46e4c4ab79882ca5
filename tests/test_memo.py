"""sparsec.memo.OwnedMemo: an entry counts only for the very array it was computed from."""

import gc

import numpy as np

from sparsec.memo import OwnedMemo


def test_hit_only_for_the_owner():
    memo = OwnedMemo(4)
    a, b = np.arange(3), np.arange(3)
    assert memo.put(a, "k", 1) == 1
    assert memo.get(a, "k") == 1
    assert memo.get(b, "k") is None              # same key, another array (a reused address)
    assert memo.get(a, "other") is None


def test_dead_owner_misses_and_is_not_kept_alive():
    memo = OwnedMemo(4)
    a = np.arange(1000)
    memo.put(a, "k", "v")
    (_, (ref, _)), = memo.items()
    del a
    gc.collect()
    assert ref() is None                           # held weakly
    assert memo.get(np.arange(1000), "k") is None


def test_no_owner_and_remembered_none():
    memo = OwnedMemo(4)
    memo.put(None, "k", None)
    miss = object()
    assert memo.get(None, "k", miss) is None       # a remembered None, told from a miss by the default
    assert memo.get(None, "absent", miss) is miss
    assert memo.get(np.arange(2), "k", miss) is miss   # an entry without an owner is not any array's


def test_cleared_when_full():
    memo = OwnedMemo(2)
    arrays = [np.arange(i + 1) for i in range(3)]
    for i, a in enumerate(arrays):
        memo.put(a, i, i)
    assert len(memo) == 1 and memo.get(arrays[2], 2) == 2 and memo.get(arrays[0], 0) is None
    memo.clear()
    assert len(memo) == 0


def test_several_owners_all_checked():
    memo = OwnedMemo(4)
    a, b, c = np.arange(2), np.arange(3), np.arange(4)
    memo.put((a, b), "k", 1)
    assert memo.get((a, b), "k") == 1
    assert memo.get((a, c), "k") is None           # one of them another array
    assert memo.get((a,), "k") is None and memo.get(a, "k") is None
    memo.put(a, "single", 2)
    assert memo.get((a,), "single") is None        # one owner is not a tuple of one
    del b
    gc.collect()
    assert memo.get((a, np.arange(3)), "k") is None
