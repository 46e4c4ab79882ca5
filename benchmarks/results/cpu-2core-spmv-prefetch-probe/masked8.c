#include <stdint.h>
#include <immintrin.h>
void spmv_masked8(const int32_t* pos, const int32_t* crd, const float* v, const float* x, float* y, long n){
  for(long i=0;i<n;i++){
    int32_t p=pos[i], e=pos[i+1];
    __m256 acc=_mm256_setzero_ps();
    for(;p<e;p+=8){
      int r=e-p; __mmask8 m = r>=8 ? 0xFF : (__mmask8)((1u<<r)-1);
      __m256i c=_mm256_maskz_loadu_epi32(m, crd+p);
      __m256 a=_mm256_maskz_loadu_ps(m, v+p);
      __m256 xv=_mm256_mmask_i32gather_ps(_mm256_setzero_ps(), m, c, x, 4);
      acc=_mm256_fmadd_ps(a,xv,acc);
    }
    __m128 s=_mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc,1));
    s=_mm_add_ps(s,_mm_movehl_ps(s,s)); s=_mm_add_ss(s,_mm_movehdup_ps(s));
    y[i]=_mm_cvtss_f32(s);
  }
}
