"""Launch helpers of the Triton backend: the specialization key and the per-specialization direct launches.

The direct path itself needs a GPU (``DirectLaunch.make`` declines in the interpreter); here a fake
jitted function and a recording ``DirectLaunch`` check which launches go through ``fn[grid]`` and which
reuse a compiled kernel. The GPU run of ``test_spgemm_template.py`` covers the real one.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sparsec.backends.triton import launch  # noqa: E402
from sparsec.backends.triton.launch import SpecializedLaunches, specialization  # noqa: E402


def test_specialization_separates_what_triton_specializes_on():
    base = torch.zeros(64, dtype=torch.float32)
    assert specialization([base]) == specialization([torch.ones(8, dtype=torch.float32)])
    assert specialization([base]) != specialization([base[1:]])                  # 4 bytes off 16
    assert specialization([base]) != specialization([base.to(torch.float64)])
    assert specialization([17]) == specialization([33])
    for other in (1, 32, 2**31, 2**63, -2**31 - 1):
        assert specialization([17]) != specialization([other]), other
    assert specialization([True]) != specialization([1])
    assert specialization([None]) != specialization([0.5])
    assert specialization([base, 17]) != specialization([17, base])


class _Compiled:
    pass


class _FakeJit:
    """Records ``fn[grid](*args, **kw)`` launches; returns a fresh compiled-kernel stand-in each time."""

    def __init__(self, arg_names, constexprs):
        self.arg_names = arg_names
        self.constexprs = [arg_names.index(n) for n in constexprs]   # as Triton's JITFunction keeps them
        self.bound = []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.bound.append((grid, args, kw))
            return _Compiled()
        return launch


class _Recorder:
    """Stands in for DirectLaunch: records launches, or refuses them when ``ok`` is False."""

    made: list = []

    def __init__(self, ck, grid, consts):
        self.ck, self.consts, self.calls, self.ok = ck, consts, [], True
        _Recorder.made.append(self)

    def __call__(self, args, grid=None):
        if not self.ok:
            return False
        self.calls.append((grid, args))
        return True


@pytest.fixture
def recorder(monkeypatch):
    _Recorder.made = []
    monkeypatch.setattr(launch.DirectLaunch, "make", staticmethod(lambda ck, grid, consts: _Recorder(ck, grid, consts)))
    return _Recorder


def test_a_repeated_specialization_launches_directly(recorder):
    fn = _FakeJit(["x", "n", "BLOCK", "LOG"], ["BLOCK", "LOG"])
    go = SpecializedLaunches(fn, {"LOG": 3, "BLOCK": 64}, num_warps=4)
    a, b = torch.zeros(32), torch.ones(48)
    go((4,), a, 17)
    assert len(fn.bound) == 1 and fn.bound[0][2] == {"LOG": 3, "BLOCK": 64, "num_warps": 4}
    assert recorder.made[0].consts == [64, 3]            # constexprs in signature order
    go((7,), b, 33)                                      # same specialization: new grid, new arguments
    assert len(fn.bound) == 1 and recorder.made[0].calls == [((7,), [b, 33])]
    go((7,), b, 32)                                      # a multiple of 16: Triton's own binding
    go((7,), b[1:], 33)                                  # unaligned
    go((7,), b.double(), 33)                             # another dtype
    assert len(fn.bound) == 4 and len(recorder.made) == 4
    go((2,), a, 49)
    assert len(fn.bound) == 4 and recorder.made[0].calls[-1] == ((2,), [a, 49])


def test_a_refused_direct_launch_falls_back_to_triton(recorder):
    fn = _FakeJit(["x", "BLOCK"], ["BLOCK"])
    go = SpecializedLaunches(fn, {"BLOCK": 8})
    go((1,), torch.zeros(4))
    recorder.made[0].ok = False
    go((3,), torch.zeros(4))
    assert [g for g, _, _ in fn.bound] == [(1,), (3,)]


def test_constexprs_before_runtime_parameters_never_launch_directly(recorder):
    fn = _FakeJit(["BLOCK", "x"], ["BLOCK"])
    go = SpecializedLaunches(fn, {"BLOCK": 8})
    for _ in range(3):
        go((1,), torch.zeros(4))
    assert len(fn.bound) == 3 and recorder.made == []


def test_constexpr_values_in_signature_order():
    from sparsec.backends.triton.launch import constexpr_values

    fn = _FakeJit(["x", "n", "BLOCK", "LOG"], ["BLOCK", "LOG"])
    assert constexpr_values(fn, {"LOG": 3, "num_warps": 4, "BLOCK": 64}) == [64, 3]   # options left out
    assert constexpr_values(fn, {"BLOCK": 64}) is None                                  # one not given
    assert constexpr_values(_FakeJit(["BLOCK", "x"], ["BLOCK"]), {"BLOCK": 8}) is None  # not last
    assert constexpr_values(lambda: None, {}) is None                                   # not a jitted function

