#include <stdint.h>
#include <immintrin.h>
static inline float hsum8(__m256 acc){ __m128 s=_mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc,1));
    s=_mm_add_ps(s,_mm_movehl_ps(s,s)); s=_mm_add_ss(s,_mm_movehdup_ps(s)); return _mm_cvtss_f32(s);}
#define BODY(HINT) \
  long nxt = 0; \
  for(long i=0;i<n;i++){ \
    int32_t p=pos[i], e=pos[i+1]; \
    for(; nxt < e + dist/4; nxt += 16){ _mm_prefetch((const char*)(crd+nxt), HINT); _mm_prefetch((const char*)(v+nxt), HINT); } \
    __m256 acc=_mm256_setzero_ps(); \
    for(;p<e;p+=8){ \
      int r=e-p; __mmask8 m = r>=8 ? 0xFF : (__mmask8)((1u<<r)-1); \
      __m256i c=_mm256_maskz_loadu_epi32(m, crd+p); \
      __m256 a=_mm256_maskz_loadu_ps(m, v+p); \
      __m256 xv=_mm256_mmask_i32gather_ps(_mm256_setzero_ps(), m, c, x, 4); \
      acc=_mm256_fmadd_ps(a,xv,acc); \
    } \
    y[i]=hsum8(acc); \
  }
void t0(const int32_t* pos, const int32_t* crd, const float* v, const float* x, float* y, long n, long dist){ BODY(_MM_HINT_T0) }
void t1(const int32_t* pos, const int32_t* crd, const float* v, const float* x, float* y, long n, long dist){ BODY(_MM_HINT_T1) }
void t2(const int32_t* pos, const int32_t* crd, const float* v, const float* x, float* y, long n, long dist){ BODY(_MM_HINT_T2) }
void nta(const int32_t* pos, const int32_t* crd, const float* v, const float* x, float* y, long n, long dist){ BODY(_MM_HINT_NTA) }
