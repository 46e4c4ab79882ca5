#include <stdint.h>
#include <omp.h>
// CSR SpMV y = A x, rows split in nthreads equal-nnz chunks (bounds given), x gathers prefetched D entries ahead
void spmv(const int64_t *bounds, int nthreads, const int32_t *pos, const int32_t *col, const float *val,
          const float *x, float *y, int D) {
    #pragma omp parallel num_threads(nthreads)
    {
        int t = omp_get_thread_num();
        int64_t r0 = bounds[t], r1 = bounds[t + 1];
        int64_t end = pos[r1];
        for (int64_t r = r0; r < r1; r++) {
            float acc = 0.f;
            int64_t j0 = pos[r], j1 = pos[r + 1];
            if (D > 0) {
                for (int64_t j = j0; j < j1; j++) {
                    int64_t p = j + D;
                    if (p < end) __builtin_prefetch(&x[col[p]], 0, 3);
                    acc += val[j] * x[col[j]];
                }
            } else {
                for (int64_t j = j0; j < j1; j++) acc += val[j] * x[col[j]];
            }
            y[r] = acc;
        }
    }
}

// the same, the row loop unrolled by 4 with 4 accumulators (closer to an LLVM-vectorized/interleaved loop)
void spmv4(const int64_t *bounds, int nthreads, const int32_t *pos, const int32_t *col, const float *val,
           const float *x, float *y, int D) {
    #pragma omp parallel num_threads(nthreads)
    {
        int t = omp_get_thread_num();
        int64_t r0 = bounds[t], r1 = bounds[t + 1];
        int64_t end = pos[r1];
        for (int64_t r = r0; r < r1; r++) {
            float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
            int64_t j = pos[r], j1 = pos[r + 1];
            for (; j + 4 <= j1; j += 4) {
                if (D > 0) {
                    int64_t p = j + D;
                    if (p + 3 < end) {
                        __builtin_prefetch(&x[col[p]], 0, 3); __builtin_prefetch(&x[col[p + 1]], 0, 3);
                        __builtin_prefetch(&x[col[p + 2]], 0, 3); __builtin_prefetch(&x[col[p + 3]], 0, 3);
                    }
                }
                a0 += val[j] * x[col[j]]; a1 += val[j + 1] * x[col[j + 1]];
                a2 += val[j + 2] * x[col[j + 2]]; a3 += val[j + 3] * x[col[j + 3]];
            }
            for (; j < j1; j++) a0 += val[j] * x[col[j]];
            y[r] = (a0 + a1) + (a2 + a3);
        }
    }
}
