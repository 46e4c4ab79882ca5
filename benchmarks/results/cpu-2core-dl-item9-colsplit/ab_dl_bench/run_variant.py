import runpy, sys
from sparsec import fastcall  # run from the repository root: python <this> rows|columns <out dir>
if sys.argv[1] == "rows":
    fastcall.FastCall._column_chunks = lambda self, *a: None
sys.argv = ["dl_bench.py", "--items", "9", "--out", sys.argv[2]]
runpy.run_path("benchmarks/dl_bench.py", run_name="__main__")
