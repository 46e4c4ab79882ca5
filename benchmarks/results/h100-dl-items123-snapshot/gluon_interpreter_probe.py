"""Does a Gluon kernel run in Triton's interpreter (TRITON_INTERPRET=1), as sparsec's CI runs its Triton code?

A plain @triton.jit kernel first (the control), then the same kernel in Gluon, on CPU tensors.
Run: python gluon_interpreter_probe.py   (on a machine without a GPU)
"""
import os
import traceback

os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402


@triton.jit
def double_tl(X, Y, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs) * 2)


@gluon.jit
def double_gl(X, Y, BLOCK: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    offs = gl.arange(0, BLOCK, layout=layout)
    gl.store(Y + offs, gl.load(X + offs) * 2)


print("triton", triton.__version__, "torch", torch.__version__, "cuda available:", torch.cuda.is_available())
x = torch.arange(128.0)
for name, kernel in (("triton.jit", double_tl), ("gluon.jit", double_gl)):
    y = torch.zeros(128)
    try:
        kernel[(1,)](x, y, 128, num_warps=4)
        print(f"{name}: ran, correct = {bool((y == 2 * x).all())}")
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {e}")
        print("   " + traceback.format_exc().strip().splitlines()[-3].strip())
