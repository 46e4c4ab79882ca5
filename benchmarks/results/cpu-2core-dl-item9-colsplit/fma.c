#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
int main(){
  for (int nt=1; nt<=2; nt++){
    double t0=omp_get_wtime(); float sink=0;
    #pragma omp parallel num_threads(nt) reduction(+:sink)
    {
      __m512 a[10]; __m512 b=_mm512_set1_ps(1.0000001f), c=_mm512_set1_ps(1e-7f);
      for(int i=0;i<10;i++) a[i]=_mm512_set1_ps(i);
      for(long it=0; it<200000000L; it++){
        for(int i=0;i<10;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
      }
      __m512 s=a[0]; for(int i=1;i<10;i++) s=_mm512_add_ps(s,a[i]);
      sink+=_mm512_reduce_add_ps(s);
    }
    double t=omp_get_wtime()-t0;
    printf("%d threads: %.2f G vecFMA/s total (%.3f s) %f\n", nt, nt*2e9/t/1e9, t, sink);
  }
}
