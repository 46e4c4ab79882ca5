"""Probe (hand-written Triton, no sparsec): n:m SpMM tile kernels on the GPU, int8 metadata.

v1 (offset_src): one tl.dot per in-block offset over strided per-slot loads (probe_v1_offset_dots.txt came from
an earlier version of this script that swept v1 over more shapes); v2: contiguous loads + a 4-d compare-and-sum;
v3: contiguous loads + tl.split + a broadcast 3-d select; v4: contiguous loads + tl.split + one [BM, BG] tile per
in-block offset interleaved with tl.join (what sparsec's template does now). The last run compared v3 and v4
(probe_v3_v4.txt); earlier runs swept v1 / v2 / v3 (probe_v1_offset_dots.txt, probe_v2_v3.txt).
Run: python3 nm_probe.py on a CUDA machine.
"""
import itertools

import torch
import triton

def nm_pack(W, n, m, crd_dtype):
    M, K = W.shape
    g = W.reshape(M, K // m, m)
    idx = g.abs().topk(n, dim=2).indices.sort(dim=2).values          # [M, G, n]
    vals = torch.gather(g, 2, idx)
    dense = torch.zeros_like(g).scatter_(2, idx, vals).reshape(M, K)
    return dense, vals.reshape(M, -1).contiguous(), idx.to(crd_dtype).reshape(M, -1).contiguous()

SRC_OFFSET = '''
@triton.jit
def k_off(A_VALS, A_CRD, B, C, N, K, MROWS, GPS, BM: tl.constexpr, BN: tl.constexpr, BG: tl.constexpr, SPLIT: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    n_tn = tl.cdiv(N, BN)
    n_tiles = n_tn * tl.cdiv(MROWS, BM)
    ks = pid // n_tiles
    pm = (pid % n_tiles) // n_tn
    pn = pid % n_tn
    rows = pm * BM + tl.arange(0, BM)
    rm = rows < MROWS
    cols = pn * BN + tl.arange(0, BN)
    cm = cols < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    G = tl.cdiv(K, @M@)
    g_lo = ks * GPS
    g_hi = tl.minimum(g_lo + GPS, G)
    g = tl.arange(0, BG)
    for g0 in tl.range(g_lo, g_hi, BG, num_stages=STAGES):
        gg = g0 + g
        gin = gg < g_hi
        gm = rm[:, None] & gin[None, :]
        slot0 = (rows[:, None].to(tl.int64) * G + gg[None, :]) * @N@
@LOADS@
@DOTS@
    out = C + rows[:, None].to(tl.int64) * N + cols[None, :]
    omask = rm[:, None] & cm[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=omask)
    else:
        tl.store(out, acc, mask=omask)
'''

SRC_V2 = SRC_OFFSET.replace("k_off", "k_v2")

def v2_src(n, m):
    body = f"""        offs = rows[:, None].to(tl.int64) * (G * {n}) + (g0 * {n} + tl.arange(0, BG * {n}))[None, :]
        lm = rm[:, None] & ((g0 * {n} + tl.arange(0, BG * {n})) < g_hi * {n})[None, :]
        vv = tl.reshape(tl.load(A_VALS + offs, mask=lm, other=0), [BM, BG, {n}])
        cc = tl.reshape(tl.load(A_CRD + offs, mask=lm, other=-1), [BM, BG, {n}])
        j = tl.arange(0, {m})
        d4 = tl.where(cc[:, :, :, None] == j[None, None, None, :], vv[:, :, :, None], 0.0)
        a = tl.reshape(tl.sum(d4, axis=2), [BM, BG * {m}]).to(vv.dtype)
        kk = g0 * {m} + tl.arange(0, BG * {m})
        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=(kk < g_hi * {m})[:, None] & cm[None, :], other=0)
        acc += tl.dot(a, b)
"""
    return SRC_V2.replace("@LOADS@\n@DOTS@\n", body).replace("@M@", str(m)).replace("@N@", str(n))

SRC_V3 = SRC_OFFSET.replace("k_off", "k_v3")

def v3_src(n, m):
    # values / coordinates loaded as contiguous [BM, BG*n] rows, split into n slot tensors by tl.split;
    # the dense [BM, BG, m] tile by n fp16 selects per element
    body = f"""        sl = g0 * {n} + tl.arange(0, BG * {n})
        offs = rows[:, None].to(tl.int64) * (G * {n}) + sl[None, :]
        lm = rm[:, None] & (sl < g_hi * {n})[None, :]
        vv = tl.load(A_VALS + offs, mask=lm, other=0)
        cc = tl.load(A_CRD + offs, mask=lm, other=-1)
"""
    names_v, names_c = ["vv"], ["cc"]
    width = n
    while width > 1:
        for x in names_v + names_c:
            body += f"        {x}0, {x}1 = tl.split(tl.reshape({x}, [BM, BG * {width // 2}, 2]))\n"
        names_v = [x + d for x in names_v for d in "01"]
        names_c = [x + d for x in names_c for d in "01"]
        width //= 2
    # after splitting, slot order: reshape [BM, BG*n] -> [BM, BG*n/2, 2] splits the last bit of the slot index first
    # so name digits are read least-significant first: slot s = sum(d_i * 2^i)
    def slot(name):
        ds = name[2:]
        return sum(int(d) << i for i, d in enumerate(ds))
    pairs = sorted(((slot(v), v, c) for v, c in zip(names_v, names_c)))
    body += f"        j = tl.arange(0, {m})\n        d = tl.zeros([BM, BG, {m}], dtype=vv.dtype)\n"
    for _, v, c in pairs:
        body += f"        d = tl.where({c}[:, :, None] == j[None, None, :], {v}[:, :, None], d)\n"
    body += f"""        a = tl.reshape(d, [BM, BG * {m}])
        kk = g0 * {m} + tl.arange(0, BG * {m})
        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=(kk < g_hi * {m})[:, None] & cm[None, :], other=0)
        acc += tl.dot(a, b)
"""
    return SRC_V3.replace("@LOADS@\n@DOTS@\n", body).replace("@M@", str(m)).replace("@N@", str(n))

SRC_V4 = SRC_OFFSET.replace("k_off", "k_v4")

def v4_src(n, m):
    # as v3, but each in-block offset t gets its own [BM, BG] tile d_t (n selects), and the dense tile is
    # the d_t interleaved with tl.join (register-local), not a broadcast 3-d where
    body = v3_src(n, m).split("        j = tl.arange")[0]
    body = body[body.index("        sl = g0"):]
    names_v = ["vv" + "".join(x) for x in _digits(n)]
    names_c = ["cc" + "".join(x) for x in _digits(n)]
    for t in range(m):
        expr = "tl.zeros([BM, BG], dtype=vv.dtype)"
        for v, c in zip(names_v, names_c):
            expr = f"tl.where({c} == {t}, {v}, {expr})"
        body += f"        d{t} = {expr}\n"
    def inter(lst):
        return lst[0] if len(lst) == 1 else f"tl.join({inter(lst[0::2])}, {inter(lst[1::2])})"
    body += f"        a = tl.reshape({inter([f'd{t}' for t in range(m)])}, [BM, BG * {m}])\n"
    body += f"""        kk = g0 * {m} + tl.arange(0, BG * {m})
        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=(kk < g_hi * {m})[:, None] & cm[None, :], other=0)
        acc += tl.dot(a, b)
"""
    return SRC_V4.replace("@LOADS@\n@DOTS@\n", body).replace("@M@", str(m)).replace("@N@", str(n))

def _digits(n):
    k = n.bit_length() - 1
    if k == 0:
        return [()]
    import itertools as it
    return list(it.product("01", repeat=k))

def offset_src(n, m):
    loads = "".join(f"        v{s} = tl.load(A_VALS + slot0 + {s}, mask=gm, other=0)\n"
                    f"        c{s} = tl.load(A_CRD + slot0 + {s}, mask=gm, other=-1)\n" for s in range(n))
    dots = ""
    for t in range(m):
        expr = "0"
        for s in range(n):
            expr = f"tl.where(c{s} == {t}, v{s}, {expr})" if expr != "0" else f"tl.where(c{s} == {t}, v{s}, 0.0).to(v{s}.dtype)"
        dots += (f"        a = {expr}\n"
                 f"        kk = gg * {m} + {t}\n"
                 f"        b = tl.load(B + kk[:, None].to(tl.int64) * N + cols[None, :], mask=(gin & (kk < K))[:, None] & cm[None, :], other=0)\n"
                 f"        acc += tl.dot(a, b)\n")
    return SRC_OFFSET.replace("@LOADS@", loads).replace("@DOTS@", dots).replace("@M@", str(m)).replace("@N@", str(n))

def load(src, name):
    import tempfile, importlib.util, os
    d = tempfile.mkdtemp()
    p = os.path.join(d, f"{name}.py")
    open(p, "w").write("import triton\nimport triton.language as tl\n" + src)
    spec = importlib.util.spec_from_file_location(name, p)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return getattr(mod, name)

FLUSH = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
def bench(fn, reps=40):
    ts = []
    for _ in range(reps):
        FLUSH.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1000)
    ts.sort(); return ts[len(ts) // 2]

def main():
    import time; t0 = time.time()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("device", torch.cuda.get_device_name(0), "triton", triton.__version__)
    lines = []
    for (M, K), (n, m), N in [((4096, 4096), (2, 4), 8), ((4096, 4096), (2, 4), 64), ((4096, 4096), (4, 8), 64), ((11008, 4096), (2, 4), 16), ((4096, 4096), (1, 4), 32)]:
        W0 = torch.randn(M, K, device="cuda").half()
        Wd, vals, crd = nm_pack(W0, n, m, torch.int8)
        X = torch.randn(K, N, device="cuda").half()
        ref = Wd.float() @ X.float()
        dense_t = bench(lambda: Wd @ X)
        G = K // m
        for name, src in (("v3", v3_src(n, m)), ("v4", v4_src(n, m))):
            kern = load(src, "k_" + name)
            best = None
            for BM, BG, warps, stages in itertools.product((64,), (16, 32), (4, 8), (1,)):
                if time.time() - t0 > 480: break
                BN = max(16, min(64, triton.next_power_of_2(N)))
                tiles = triton.cdiv(M, BM) * triton.cdiv(N, BN)
                split = 1
                while split * 2 <= G // BG and tiles * split * 2 <= 4 * sms:
                    split *= 2
                gps = triton.cdiv(triton.cdiv(G, split), BG) * BG
                split = triton.cdiv(G, gps)
                def run():
                    Y = torch.zeros(M, N, device="cuda", dtype=torch.float32)
                    kern[(tiles * split,)](vals, crd, X, Y, N, K, M, gps, BM=BM, BN=BN, BG=BG, SPLIT=split, STAGES=stages, num_warps=warps)
                    return Y
                try:
                    Y = run()
                    err = ((Y - ref).norm() / ref.norm()).item()
                    assert err < 1e-2, err
                    t = bench(run, 15)
                except Exception as e:
                    print("fail", name, n, m, N, BM, BG, warps, stages, str(e)[:300], flush=True); continue
                print(name, n, m, N, BM, BG, warps, stages, f"{t:.1f}", flush=True)
                if best is None or t < best[0]:
                    best = (t, BM, BG, warps, stages, split)
            if best:
                lines.append(f"{M}x{K} {n}:{m} N={N} {name}: dense {dense_t:.1f} us, best {best[0]:.1f} us ({dense_t/best[0]:.2f}x) BM={best[1]} BG={best[2]} w={best[3]} st={best[4]} s={best[5]}")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
