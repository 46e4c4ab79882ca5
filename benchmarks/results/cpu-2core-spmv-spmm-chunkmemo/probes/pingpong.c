#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
#include <immintrin.h>
static _Atomic long seq=0, done=0;
void* w(void*a){ long last=0; for(;;){ long s; while((s=atomic_load(&seq))==last) _mm_pause(); if(s<0) return 0; last=s; atomic_store(&done,s);} }
int main(){ pthread_t t; pthread_create(&t,0,w,0);
 struct timespec a,b; for(int rep=0;rep<5;rep++){ clock_gettime(CLOCK_MONOTONIC,&a);
 for(long i=1;i<=100000;i++){ long base=rep*1000000+i; atomic_store(&seq,base); while(atomic_load(&done)!=base) _mm_pause(); }
 clock_gettime(CLOCK_MONOTONIC,&b); printf("round trip %.3f us\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/1e5/1e3);}
 atomic_store(&seq,-1); pthread_join(t,0); }
