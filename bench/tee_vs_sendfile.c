/* Is `tee` from a pipe cheaper than `sendfile` from a memfd? (issue 21, docs/BENCHMARKS.md §2)
 *
 * The edge sends each stored response with one sendfile() from a sealed memfd; 19 % of its CPU
 * is that file's page-cache lookups. The alternative measured here keeps each response in a
 * "master" pipe (filled once by splice from the memfd) and sends it with tee() into a
 * per-connection pipe, then splice() to the socket: no page-cache lookup, one more system call.
 *
 * One sender thread writes N responses of 93 812 bytes to a loopback TCP socket; another thread
 * reads and drops them. Prints the sender thread's CPU per response (which includes the
 * loopback delivery the kernel does on its behalf).
 *
 *   gcc -O2 -o /tmp/tee_vs_sendfile bench/tee_vs_sendfile.c -lpthread
 *   for i in 1 2 3 4 5; do /tmp/tee_vs_sendfile 0 100000; /tmp/tee_vs_sendfile 1 100000; done
 *
 * mode 0 = sendfile, mode 1 = tee + splice.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <sys/resource.h>
#define LEN 93812
static int rfd;
static void *drain(void *a){ char buf[8192]; for(;;){ ssize_t n=read(rfd,buf,sizeof buf); if(n<=0) break;} return 0; }
static double cpu(){ struct rusage r; getrusage(RUSAGE_THREAD,&r); return r.ru_utime.tv_sec+r.ru_stime.tv_sec+(r.ru_utime.tv_usec+r.ru_stime.tv_usec)/1e6; }
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int N=atoi(argv[2]);
  int ls=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)}; 
  bind(ls,(void*)&a,sizeof a); socklen_t sl=sizeof a; getsockname(ls,(void*)&a,&sl); listen(ls,1);
  int c=socket(AF_INET,SOCK_STREAM,0); connect(c,(void*)&a,sizeof a); int s=accept(ls,0,0);
  int one=1; setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
  rfd=c; pthread_t t; pthread_create(&t,0,drain,0);
  int m=memfd_create("x",0); char *data=malloc(LEN); memset(data,'a',LEN); write(m,data,LEN);
  int master[2], cp[2]; pipe(master); pipe(cp);
  fcntl(master[1],F_SETPIPE_SZ,1<<20); fcntl(cp[1],F_SETPIPE_SZ,1<<20);
  loff_t off=0; ssize_t f=splice(m,&off,master[1],0,LEN,0); if(f!=LEN){printf("fill %zd\n",f);return 1;}
  double t0=cpu(); struct timespec w0,w1; clock_gettime(CLOCK_MONOTONIC,&w0);
  for(int i=0;i<N;i++){
    if(mode==0){ off_t o=0; size_t left=LEN; while(left){ ssize_t n=sendfile(s,m,&o,left); if(n<=0){perror("sf");return 1;} left-=n; } }
    else { ssize_t n=tee(master[0],cp[1],LEN,0); if(n!=LEN){printf("tee %zd\n",n);return 1;} size_t left=LEN; while(left){ ssize_t k=splice(cp[0],0,s,0,left,SPLICE_F_MORE*0); if(k<=0){perror("sp");return 1;} left-=k; } }
  }
  double t1=cpu(); clock_gettime(CLOCK_MONOTONIC,&w1);
  printf("mode %d: %.2f us cpu/req (sender thread), wall %.2f us/req\n",mode,(t1-t0)/N*1e6,((w1.tv_sec-w0.tv_sec)*1e9+(w1.tv_nsec-w0.tv_nsec))/N/1e3);
  return 0;
}
