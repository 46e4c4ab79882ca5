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
