"""sparsec benchmarks: peers side by side with the physical floor.

Run ``python benchmarks/run.py --help`` (or ``python -m sparsec.bench``); see
``benchmarks/README.md``. Modules: :mod:`.cases` (what is measured),
:mod:`.peers_cpu` / :mod:`.peers_gpu` (who is measured), :mod:`.floor`
(bandwidth, peak, least bytes and flops), :mod:`.timing`, :mod:`.report`.
"""
