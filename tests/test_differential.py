"""The compiler-core differential grid against numpy.einsum (float64 oracle).

Every case runs on the reference interpreter (``interp``) and on the LLVM CPU
backend (``cpu``). The Triton backend runs the same grid in
tests/backends/test_triton.py.
"""

import pytest

from grid import check, extra_cases, grid, run_case

CASES = grid() + extra_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id() for c in CASES])
def test_interp(case):
    got, ref = run_case(case, "interp")
    check(got, ref, case.dtype)


@pytest.mark.parametrize("case", CASES, ids=[c.id() for c in CASES])
def test_cpu(case):
    got, ref = run_case(case, "cpu")
    check(got, ref, case.dtype)


def test_grid_is_large_enough():
    # The issue asks for at least 500 differential cases per backend.
    assert len(CASES) >= 500
    labels = {c.label for c in CASES}
    for needed in ("spmv", "spmm", "sddmm", "add", "mul", "spgemm", "ttv", "ttm", "mttkrp", "inner",
                   "rowsum", "transpose", "elementwise", "rowmax"):
        assert needed in labels
