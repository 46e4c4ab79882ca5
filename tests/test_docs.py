"""The README and the public docstrings agree with the code.

* Every fenced ```python block of ``README.md`` runs, each in a fresh interpreter (a subprocess
  with ``TRITON_INTERPRET=1`` and a private ``SPARSEC_CACHE_DIR``). A block that cannot run on a
  CPU-only CI machine is listed in :data:`SKIP` (keyed by a substring of the block, with the
  reason); a block that uses names it does not define gets them from :data:`PRELUDE` (also keyed
  by a substring, stated explicitly). Both lists must match exactly one block each, so neither
  goes stale silently.
* Every ``SPARSEC_*`` environment variable that code under ``sparsec/`` reads (a string constant
  in code, not in a docstring) is mentioned in README.md or in a docstring under ``sparsec/``.
* Every name in ``sparsec.__all__`` has a docstring, and so does every public method of the
  exported classes; a ``name=`` a public docstring mentions is a parameter of its signature.
* Smaller claims of the README that take a few lines to check: the format short names, the
  dump stages, the schedule commands, default values, the error types for bad input, the files
  the README names.

A test that fails today because the docs and the code disagree is marked
``xfail(strict=True)`` with the mismatch in its reason: fix the doc (or the code) and remove
the marker.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparsec as sc

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_TEXT = README.read_text()
VAR = re.compile(r"SPARSEC_[A-Z0-9_]*[A-Z0-9]")


def readme_python_blocks() -> list[tuple[int, str]]:
    """(first line number, source) of every fenced ```python block of README.md."""
    blocks, lines, i = [], README_TEXT.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 2, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = readme_python_blocks()

#: blocks not run here, keyed by a substring of the block: the reason.
SKIP = {
    'device="cuda"': "needs a CUDA GPU (torch.nn.Linear(..., device='cuda')); "
                     "test_readme_nn_block_on_cpu runs the same calls on the CPU",
}

#: code run before a block that uses names it does not define, keyed by a substring of the block.
#: (The README's blocks are fragments: the schedule block uses a float32-able A and a B that no
#: block defines; the attention block says "q, k_, v: [heads, seq, head_dim] CUDA tensors; mask:
#: torch BSR" -- here tiny CPU tensors, run by the Triton interpreter.)
PRELUDE = {
    "sc.masked_attention(scale=0.125)": (
        "import warnings; warnings.filterwarnings('ignore')\n"
        "import torch\n"
        "import sparsec as sc\n"
        "torch.manual_seed(0)\n"
        "q, k_, v = (torch.randn(1, 256, 16, dtype=torch.bfloat16) for _ in range(3))\n"
        "_dense_mask = torch.kron(torch.tensor([[1., 0.], [1., 1.]]), torch.ones(128, 128)).to(torch.bfloat16)\n"
        "mask = _dense_mask.to_sparse_bsr((128, 128))\n"
    ),
}

#: what a block's run must show (substrings of its stdout), keyed by a substring of the block:
#: the text around it says so.
EXPECT_STDOUT = {
    # print(k.dump("loops")) of a CSR SpMM: the loop over A's row positions
    'sc.einsum("ij,j->i", A, x)': ["kernel kernel(", "compressed level 1 of A"],
    # "the schedule and its effect on every loop"
    "sc.Schedule().parallelize": ["// schedule: parallelize(i", "vector(8)", "balance=A_pos1"],
}

#: checks appended to a block (they run in its namespace after it).
EPILOGUE = {
    'sc.einsum("ij,j->i", A, x)': (
        "assert np.allclose(y, A @ x)\n"
        "assert np.allclose(C, A.astype(np.float32) @ np.ones((1000, 64), np.float32), rtol=1e-4)\n"
        "assert isinstance(S, sc.Tensor) and S.format.short_name() == 'csr'\n"
        "assert np.allclose(S.to_numpy(), A.toarray() * 8)\n"
        "for _stage in ('tensor', 'llvm', 'asm', 'all'):\n"       # the comment: also these stages
        "    assert k.dump(_stage)\n"
    ),
    "sc.Schedule().parallelize": "assert np.allclose(C, A @ B, rtol=1e-4)\n",
    "sc.masked_attention(scale=0.125)": (
        "_s = (q.float() @ k_.float().transpose(1, 2)) * 0.125\n"
        "_s = _s.masked_fill(_dense_mask.float() == 0, float('-inf'))\n"
        "assert (O.float() - torch.softmax(_s, -1) @ v.float()).abs().max() < 1e-2\n"
        "assert k.dump('triton')\n"
    ),
}


def _key(table: dict, src: str) -> str | None:
    hits = [key for key in table if key in src]
    assert len(hits) <= 1, f"several keys {hits} match one README block"
    return hits[0] if hits else None


def _run(code: str, tmp_path: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1", SPARSEC_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("table", [SKIP, PRELUDE, EXPECT_STDOUT, EPILOGUE], ids=["SKIP", "PRELUDE", "EXPECT", "EPI"])
def test_block_tables_are_not_stale(table):
    """Each key of the per-block tables matches exactly one README block."""
    for key in table:
        n = sum(key in src for _, src in BLOCKS)
        assert n == 1, f"{key!r} matches {n} README blocks"


#: the blocks run here: all but those in SKIP (each SKIP key matches one block: test_block_tables_are_not_stale)
RUN_BLOCKS = [(line, src) for line, src in BLOCKS if _key(SKIP, src) is None]


@pytest.mark.parametrize("line,src", RUN_BLOCKS, ids=[f"README.md:{line}" for line, _ in RUN_BLOCKS])
def test_readme_python_block(line, src, tmp_path):
    pre, epi, want = _key(PRELUDE, src), _key(EPILOGUE, src), _key(EXPECT_STDOUT, src)
    code = (PRELUDE[pre] if pre else "") + src + (EPILOGUE[epi] if epi else "")
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, f"README.md:{line} failed:\n{proc.stderr[-3000:]}"
    for text in EXPECT_STDOUT.get(want, []) if want else []:
        assert text in proc.stdout, f"README.md:{line}: {text!r} not in its output:\n{proc.stdout[-2000:]}"


def test_readme_first_blocks_run_in_reading_order(tmp_path):
    """The first two blocks, run one after the other as a reader would, without any prelude (the schedule
    block used a ``B`` no block defined)."""
    first = next(src for _, src in BLOCKS if 'sc.einsum("ij,j->i", A, x)' in src)
    sched = next(src for _, src in BLOCKS if "sc.Schedule().parallelize" in src)
    proc = _run(first.replace("1000", "100") + sched, tmp_path)
    if proc.returncode != 0 and "NameError: name 'B' is not defined" not in proc.stderr:
        raise RuntimeError(f"failed for another reason than the stated one:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_readme_nn_block_on_cpu():
    """The sparsec.nn block's calls (README "Pruned models"), on the CPU at a small size."""
    torch = pytest.importorskip("torch")
    import sparsec.nn as snn

    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 64, dtype=torch.float32)
    x = torch.randn(4, 64)
    for kw, fmt in ((dict(sparsity=0.8), None), (dict(pattern="2:4"), "nm(2, 4)"),
                    (dict(block=(32, 32), sparsity=0.5), "bsr(32, 32)")):
        layer = snn.SparseLinear.from_dense(dense, **kw)
        if fmt is not None:
            assert fmt in str(layer.format), (kw, layer.format)
        y = layer(x)
        assert y.shape == (4, 64)


# ----------------------------------------------------------------------------------------------
# environment variables

def _sparsec_sources() -> list[Path]:
    return sorted((ROOT / "sparsec").rglob("*.py"))


def _env_reads_and_docstrings() -> tuple[dict[str, list[str]], set[str]]:
    """SPARSEC_* names in code string constants (where read), and those mentioned in docstrings."""
    reads: dict[str, list[str]] = {}
    documented: set[str] = set()
    for path in _sparsec_sources():
        tree = ast.parse(path.read_text())
        doc_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    documented.update(VAR.findall(doc))
                    doc_nodes.add(id(node.body[0].value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in doc_nodes:
                for name in VAR.findall(node.value):
                    reads.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return reads, documented


ENV_READS, ENV_DOCUMENTED = _env_reads_and_docstrings()

#: variables the code reads that neither README.md nor any docstring mentions (none today).
UNDOCUMENTED_ENV: dict[str, str] = {}


def test_env_var_scan_finds_the_known_ones():
    for name in ("SPARSEC_CACHE_DIR", "SPARSEC_KERNEL_CACHE_SIZE", "SPARSEC_NUM_THREADS", "SPARSEC_DEBUG"):
        assert name in ENV_READS, name


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=f"{n} is {UNDOCUMENTED_ENV[n]} but is mentioned "
                                                                 "neither in README.md nor in any docstring"))
    if n in UNDOCUMENTED_ENV else n
    for n in sorted(set(ENV_READS) | set(UNDOCUMENTED_ENV))])
def test_env_var_is_documented(name):
    assert name in ENV_READS, f"{name} is no longer read under sparsec/: drop it from UNDOCUMENTED_ENV"
    assert name in README_TEXT or name in ENV_DOCUMENTED, f"{name} read at {ENV_READS[name]}, documented nowhere"


def test_readme_env_vars_are_read():
    """Every SPARSEC_* the README names is read by sparsec/, the tests (fuzzer prefixes) or the examples."""
    others = "".join(p.read_text() for d in ("tests", "examples") for p in sorted((ROOT / d).glob("*.py")))
    for name in set(VAR.findall(README_TEXT)):
        assert name in ENV_READS or name in others, name
    for prefix in ("SPARSEC_FUZZ", "SPARSEC_SCHEDULE_FUZZ", "SPARSEC_CONVERSION_FUZZ"):
        for suffix in ("_EXAMPLES", "_SEED"):
            assert prefix + suffix in others, prefix + suffix


# ----------------------------------------------------------------------------------------------
# public API docstrings

PUBLIC = [n for n in getattr(sc, "__all__", [n for n in dir(sc) if not n.startswith("_")]) if n != "__version__"]


def _public_callables():
    for name in PUBLIC:
        obj = getattr(sc, name)
        yield name, obj
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                func = func.fget if isinstance(func, property) else func
                if callable(func):
                    yield f"{name}.{attr}", func


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_docstring(name):
    obj = getattr(sc, name)
    own = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    assert own and own.strip(), f"sparsec.{name} has no docstring"


def test_public_methods_have_docstrings():
    missing = [name for name, f in _public_callables() if not (getattr(f, "__doc__", None) or "").strip()]
    assert not missing, missing


#: ``name=`` spellings in public docstrings that are not about the callable's own parameters.
NOT_PARAMETERS = {
    "Tensor.to_device": {"target"},               # sc.compile's target="triton"
    "Schedule.skip_zeros": {"y"},                 # the math ``y = W x``
    "masked_attention": {"outputs", "S", "O"},    # a sc.compile example and the two statements
}


def test_docstring_keyword_arguments_exist():
    """A ``name=`` in a public docstring is a parameter of that callable (or a documented **kwargs)."""
    stale = []
    for name, f in _public_callables():
        try:
            params = inspect.signature(f).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        for word in set(re.findall(r"``(\w+)\s*=", f.__doc__ or "")):
            if word not in params and word not in NOT_PARAMETERS.get(name, ()):
                stale.append(f"{name}: ``{word}=``")
    assert not stale, stale


def test_dump_docstring_lists_every_stage():
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, target="interp")
    listed = set(re.findall(r"``(\w+)``", sc.Kernel.dump.__doc__))
    accepted = {"tensor", "passes", "loops", "llvm", "asm", "triton", "all"}
    for stage in sorted(accepted):
        try:
            k.dump(stage)
        except ValueError as e:
            assert "unknown stage" in str(e)
            accepted.discard(stage)
    assert accepted <= listed, sorted(accepted - listed)


def test_dump_stages_in_readme_comment():
    """README.md:20: ``k.dump("loops")  # also "tensor", "llvm", "asm", "all"`` (CPU kernel)."""
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"})
    k(A=sp.random(8, 8, density=0.3, format="csr", random_state=0), x=np.ones(8))
    for stage in ("loops", "tensor", "llvm", "asm", "all"):
        assert k.dump(stage), stage
    with pytest.raises(ValueError, match="unknown stage"):
        k.dump("no-such-stage")


# ----------------------------------------------------------------------------------------------
# README prose

SHORT_NAMES = {  # README "Formats": name -> ndim to parse it with
    "dense": 2, "csr": None, "csc": None, "coo": 2, "dcsr": None, "dcsc": None, "csf": 3, "csf(2,0,1)": None,
    "bsr(4, 4)": None, "ell": None, "nm(2, 4)": None, "nm(2, 4, packed)": None, "nm(1, 4, packed)": None,
    "bitmap": None, "csr_unsorted": None, "csc_unsorted": None, "nm(2,4)[pos32,crd8]": None,
    "csr[pos32,crd16]": None,
}


@pytest.mark.parametrize("name", list(SHORT_NAMES))
def test_readme_short_names_parse(name):
    assert isinstance(sc.parse_format(name, SHORT_NAMES[name]), sc.Format)


def test_readme_csr_unsorted_is_the_stated_encoding():
    enc = "#sparse_tensor.encoding<{ map = (i, j) -> (i : dense, j : compressed(nonordered)) }>"
    assert sc.parse_format("csr_unsorted") == sc.parse_format(enc)


def test_readme_schedule_commands_exist():
    for cmd in ("reorder", "split", "fuse", "pos", "parallelize", "vectorize", "unroll", "block", "workspace"):
        assert callable(getattr(sc.Schedule, cmd)), cmd
    # "without a branch, the default, or with one, touch='branch'"
    touch = inspect.signature(sc.Schedule.workspace).parameters["touch"]
    assert touch.default != "branch"
    sc.Schedule().workspace("j", touch="branch")


def test_readme_lists_every_schedule_command():
    commands = {m for m, v in vars(sc.Schedule).items() if not m.startswith("_") and callable(v) and m != "of"}
    section = README_TEXT.split("Commands:", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{c}`" in section for c in commands), sorted(c for c in commands if f"`{c}`" not in section)


def test_readme_defaults():
    assert inspect.signature(sc.compile).parameters["target"].default == "cpu"
    assert inspect.signature(sc.einsum).parameters["target"].default == "cpu"
    from sparsec import kernel_cache

    assert kernel_cache.DEFAULT_SIZE == 256
    from sparsec.backends.triton.options import TritonOptions

    fields = set(TritonOptions.__dataclass_fields__)
    assert {"split_rows", "segment", "block_n"} <= fields
    assert sc.parse_format("csr").pos_width == sc.parse_format("csr").crd_width == 32


def test_readme_narrow_kernel_raises_format_error_naming_the_operand():
    k = sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr[pos32,crd8]"})
    wide = sp.random(4, 300, density=0.05, format="csr", random_state=1)
    with pytest.raises(sc.FormatError, match="'A'"):
        k(A=wide, x=np.ones(300))
    # built from scipy with too-narrow a declared width: widened, never narrowed
    assert sc.Tensor.from_scipy(wide, format="csr[pos32,crd8]").format.crd_width == 16


def test_readme_malformed_buffers_raise_format_error():
    with pytest.raises(sc.FormatError, match=r"'A', level 1.*pos"):
        sc.Tensor.from_buffers("csr", (3, 3), [{}, {"pos": np.array([0, 2, 1, 3], np.int32),
                                                    "crd": np.array([0, 1, 2], np.int32)}], np.ones(3), name="A")


def test_readme_numeric_rules():
    A = sp.random(10, 10, density=0.3, format="csr", random_state=0)
    x = np.random.default_rng(0).random(10)
    with pytest.raises(TypeError, match="'A'"):
        sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="int32")(A=A, x=x)
    with pytest.raises(OverflowError, match="'A'"):
        sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="int8")(
            A=(A * 1000 + sp.eye(10) * 1000).astype(np.int64).tocsr(), x=np.ones(10, np.int64))
    with pytest.raises(TypeError, match="'A'"):          # int to bool: down a kind
        sc.compile("y[i,j] = A[i,j]", formats={"A": "csr"}, dtype="bool")(A=A.astype(np.int32))
    # up a kind is accepted: int64 to float32, bool to int
    assert sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="float32")(
        A=(A * 10).astype(np.int64), x=np.ones(10, np.int64)).dtype == np.float32
    assert sc.compile("y[i] = A[i,j] * x[j]", formats={"A": "csr"}, dtype="int32")(
        A=A.astype(bool), x=np.ones(10, bool)).dtype == np.int32
    with pytest.raises(sc.SparsecError, match="300"):
        sc.compile("y[i] = 300 * A[i,j]", formats={"A": "csr"}, dtype="int8")
    assert np.allclose(sc.einsum(",i->i", 2.0, x), 2 * x)
    assert sc.einsum("ij,j->i", A.astype(bool), x > 0.5).dtype == np.bool_
    # structural zeros: 0 * NaN = 0 where the entry is absent
    an = sp.csr_matrix(([1.0], ([0], [0])), shape=(2, 2))
    assert np.array_equal(sc.einsum("ij,j->i", an, np.array([1.0, np.nan])), [1.0, 0.0])


def test_readme_coo_duplicates_summed_explicit_zeros_kept():
    t = sc.Tensor.from_coo(np.array([[0, 0, 1], [1, 1, 2]]), np.array([1.0, 2.0, 0.0]), shape=(3, 3))
    assert t.to_numpy()[0, 1] == 3.0
    assert t.to("csr").to_scipy().nnz == 2


def test_readme_files_exist():
    for rel in ("scripts/demo.sh", "scripts/test.sh", ".ci/run", "benchmarks/tune_triton.py", "benchmarks/dl_bench.py",
                "benchmarks/README.md", "tests/test_fuzz.py", "tests/test_schedule_fuzz.py",
                "tests/test_conversion_fuzz.py", "tests/test_api_hunt.py", "sparsec/frontend/idioms.py",
                "sparsec/backends/triton/tiles.py", "sparsec/backends/triton/attention.py",
                "sparsec/backends/triton/spgemm.py", "sparsec/schedule.py"):
        assert (ROOT / rel).exists(), rel
    for link in set(re.findall(r"\]\(([^)\s]+)\)", README_TEXT)):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_examples_document_quick_and_take_it():
    """Each examples/dl_*.py says ``--quick`` in its docstring, and the flag reaches dl.setup."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import _dl_common as dl
    finally:
        sys.path.remove(str(ROOT / "examples"))
    assert dl.setup(["--quick"], device="cpu").quick and not dl.setup([], device="cpu").quick
    for path in sorted((ROOT / "examples").glob("dl_*.py")):
        src = path.read_text()
        doc = ast.get_docstring(ast.parse(src)) or ""
        assert "--quick" in doc, path.name
        assert "dl.setup(" in src, path.name
