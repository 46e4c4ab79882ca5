#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
int main(){
  long sizes[] = {32<<10, 256<<10, 1<<20, 1600<<10, 4<<20, 64<<20};
  for (int si=0; si<6; si++){
    long S = sizes[si];
    for (int nt=1; nt<=2; nt++){
      double t0, t; float sink=0; long reps = (2L<<30)/S;
      #pragma omp parallel num_threads(nt) reduction(+:sink)
      {
        float *buf = aligned_alloc(64, S); for (long i=0;i<S/4;i++) buf[i]=i;
        #pragma omp barrier
        #pragma omp master
        t0 = omp_get_wtime();
        __m512 acc[8]; for(int i=0;i<8;i++) acc[i]=_mm512_setzero_ps();
        for (long r=0;r<reps;r++)
          for (long i=0;i<S/4;i+=128)
            for (int j=0;j<8;j++) acc[j]=_mm512_add_ps(acc[j], _mm512_load_ps(buf+i+16*j));
        #pragma omp barrier
        #pragma omp master
        t = omp_get_wtime()-t0;
        __m512 s=acc[0]; for(int i=1;i<8;i++) s=_mm512_add_ps(s,acc[i]); sink+=_mm512_reduce_add_ps(s);
        free(buf);
      }
      printf("S=%6ld KB %d threads: %.1f GB/s total\n", S>>10, nt, nt*(double)reps*S/t/1e9);
    }
  }
}
