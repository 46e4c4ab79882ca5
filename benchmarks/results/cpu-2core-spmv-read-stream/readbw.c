#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <time.h>
#include <string.h>
#include <immintrin.h>
static float *a; static size_t n; static int nt; static double sums[8];
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void *work(void *p){long id=(long)p; size_t lo=n*id/nt, hi=n*(id+1)/nt;
  __m512 s0=_mm512_setzero_ps(),s1=s0,s2=s0,s3=s0;
  for(size_t i=lo;i+64<=hi;i+=64){s0=_mm512_add_ps(s0,_mm512_load_ps(a+i));s1=_mm512_add_ps(s1,_mm512_load_ps(a+i+16));
    s2=_mm512_add_ps(s2,_mm512_load_ps(a+i+32));s3=_mm512_add_ps(s3,_mm512_load_ps(a+i+48));}
  sums[id]=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0,s1),_mm512_add_ps(s2,s3))); return 0;}
int main(int c,char**v){ size_t bytes=(size_t)atol(v[1])<<20; nt=atoi(v[2]); n=bytes/4;
  a=aligned_alloc(64,bytes); for(size_t i=0;i<n;i++)a[i]=1;
  double best=1e9; for(int r=0;r<5;r++){pthread_t th[8]; double t=now();
    for(long i=0;i<nt;i++)pthread_create(&th[i],0,work,(void*)i); for(int i=0;i<nt;i++)pthread_join(th[i],0);
    t=now()-t; if(t<best)best=t;}
  printf("read %zu MiB, %d threads: %.1f GB/s (sum %g)\n", bytes>>20, nt, bytes/best/1e9, sums[0]); }
