"""Matrix Market I/O through ``scipy.io.mmread`` / ``mmwrite`` (fast_matrix_market underneath).

``.mtx.gz`` files are read and written through :func:`gzip.open`. Pattern matrices
load with value 1, symmetric / skew-symmetric / Hermitian files are expanded to
both triangles (scipy does it), and array (dense) files load as dense tensors.
"""

from __future__ import annotations

import gzip
import os
from typing import IO, Any, Union

import numpy as np

from .errors import FormatError
from .formats import FormatLike
from .tensor import Tensor

__all__ = ["read_mtx", "write_mtx"]

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def _is_path(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _stem(path: Any) -> str:
    """``/a/b/cage11.mtx.gz`` -> ``cage11``."""
    base = os.path.basename(os.fspath(path))
    for suffix in (".gz", ".mtx"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base


def _mmread(source: PathOrFile) -> Any:
    if _is_path(source) and os.fspath(source).endswith(".gz"):
        with gzip.open(source, "rb") as f:
            return _mmread_file(f)
    if _is_path(source):
        with open(source, "rb") as f:
            return _mmread_file(f)
    return _mmread_file(source)


def _mmread_file(f: Any) -> Any:
    """``scipy.io.mmread`` of a binary file object, except for an ``array`` file without rows.

    scipy's reader (fast_matrix_market) kills the process with SIGFPE on an array file of
    0 rows (and its ``mminfo`` aborts on a gzip stream), so the header is read here first
    and such a file becomes an empty array.
    """
    import io as _io

    import scipy.io

    if not (hasattr(f, "seekable") and f.seekable()):
        f = _io.BytesIO(f.read())
    start = f.tell()
    banner = f.readline().split()
    line = f.readline()
    while line.startswith(b"%") or (line and not line.strip()):
        line = f.readline()
    f.seek(start)
    size = line.split()
    if len(banner) >= 4 and banner[2].lower() == b"array" and len(size) >= 2 and size[0] == b"0":
        field = banner[3].lower()
        if field == b"complex":
            return np.zeros((0, int(size[1])), dtype=np.complex128)   # refused by the caller
        return np.zeros((0, int(size[1])), dtype=np.int64 if field == b"integer" else np.float64)
    return scipy.io.mmread(f)


def read_mtx(
    path_or_file: PathOrFile,
    format: FormatLike | None = None,
    dtype: Any = None,
    name: str | None = None,
) -> Tensor:
    """Read a Matrix Market file (``.mtx`` or ``.mtx.gz``, or a binary file object) into a Tensor.

    ``format=None`` means ``"csr"`` for coordinate files and ``"dense"`` for array
    files. ``dtype`` casts the values (default: float64 for real and pattern files,
    int64 for integer files); complex files are not supported. ``name`` defaults to
    the file name without ``.mtx``/``.gz``. Duplicate entries are summed.
    """
    if name is None and _is_path(path_or_file):
        name = _stem(path_or_file)
    m = _mmread(path_or_file)
    if np.iscomplexobj(m if isinstance(m, np.ndarray) else m.data):
        raise FormatError(f"tensor {name!r}: complex Matrix Market files are not supported")
    if isinstance(m, np.ndarray):
        arr = m if dtype is None else m.astype(dtype)
        return Tensor.from_numpy(arr, "dense" if format is None else format, name)
    t = Tensor.from_scipy(m, "csr" if format is None else format, name)
    # cast after the conversion: scipy.sparse holds no float16 (nor bfloat16), which Tensors do
    return t if dtype is None else t.astype(dtype)


def write_mtx(path: PathOrFile, tensor: Tensor, comment: str = "") -> None:
    """Write a 2-D tensor as Matrix Market (general symmetry; ``.gz`` paths are gzip-compressed).

    Dense-format tensors are written as ``array`` files, the others as
    ``coordinate`` files holding every stored entry (explicit zeros included).
    Boolean values are written as integers, float16 as float32.
    """
    import scipy.io

    if not isinstance(tensor, Tensor):
        raise FormatError(f"write_mtx needs a sparsec.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 2:
        label = f"tensor {tensor.name!r}" if tensor.name else "tensor <unnamed>"
        raise FormatError(f"{label}: Matrix Market holds 2-D matrices, this tensor has shape {tensor.shape}")
    t = tensor
    if t.dtype == np.bool_:
        t = t.astype(np.int8)
    elif t.dtype == np.float16:
        t = t.astype(np.float32)
    data = t.to_numpy() if t.format.is_dense else t.to_scipy().tocoo()
    if not _is_path(path):
        scipy.io.mmwrite(path, data, comment=comment, symmetry="general")
        return
    # open the file ourselves: given a path, scipy appends ".mtx" to names not ending in it.
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        scipy.io.mmwrite(f, data, comment=comment, symmetry="general")
