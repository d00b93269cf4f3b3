/* Peer measurement for bench/ec-bench.ts: Intel ISA-L Reed-Solomon encode and
 * decode of one stripe at a time on one thread. Built by the bench into /tmp.
 *
 * usage: ec-isal K M STRIPE_BYTES DURATION_MS
 * prints: {"encodeGBps":X,"decodeGBps":Y,"encodeCpuGBps":..,"decodeCpuGBps":..}
 * (GB = 1e9 bytes of stripe data; *Cpu* = per second of this process's CPU
 * time, which a loaded shared machine distorts far less than wall time)
 * Decode = the worst case the cold tier sees: the first M data shards lost,
 * decode matrix built and inverted per stripe (as a decoder without a cache
 * of erasure patterns would), then the lost shards regenerated.
 */
#include <isa-l/erasure_code.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SHARDS 32

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s K M STRIPE_BYTES DURATION_MS\n", argv[0]);
    return 2;
  }
  int k = atoi(argv[1]), m = atoi(argv[2]);
  long stripe = atol(argv[3]);
  double duration = atof(argv[4]) / 1000.0;
  if (k < 1 || m < 1 || k + m > MAX_SHARDS || stripe % k != 0) {
    fprintf(stderr, "bad shape\n");
    return 2;
  }
  int len = (int)(stripe / k);
  int n = k + m;
  unsigned char* shards[MAX_SHARDS];
  for (int i = 0; i < n; i++) {
    if (posix_memalign((void**)&shards[i], 64, len) != 0) return 1;
    for (int j = 0; j < len; j++) shards[i][j] = (unsigned char)rand();
  }
  unsigned char* encode_matrix = malloc(n * k);
  unsigned char* g_tbls = malloc(32 * k * m);
  gf_gen_cauchy1_matrix(encode_matrix, n, k);
  ec_init_tables(k, m, &encode_matrix[k * k], g_tbls);

  /* encode */
  long stripes = 0;
  double cpu_start = cpu_s();
  double start = now_s(), elapsed;
  do {
    for (int r = 0; r < 8; r++) ec_encode_data(len, k, m, g_tbls, shards, &shards[k]);
    stripes += 8;
    elapsed = now_s() - start;
  } while (elapsed < duration);
  double encode_gbps = (double)stripes * stripe / elapsed / 1e9;
  double encode_cpu_gbps = (double)stripes * stripe / (cpu_s() - cpu_start) / 1e9;

  /* decode: shards 0..m-1 lost; survivors are m..n-1 (k of them, the first k used) */
  unsigned char* out[MAX_SHARDS];
  for (int i = 0; i < m; i++) {
    if (posix_memalign((void**)&out[i], 64, len) != 0) return 1;
  }
  unsigned char* b = malloc(k * k);
  unsigned char* inv = malloc(k * k);
  unsigned char* dec = malloc(k * m);
  unsigned char* d_tbls = malloc(32 * k * m);
  unsigned char* src[MAX_SHARDS];
  stripes = 0;
  cpu_start = cpu_s();
  start = now_s();
  do {
    for (int r = 0; r < 8; r++) {
      for (int i = 0; i < k; i++) {
        memcpy(&b[k * i], &encode_matrix[k * (m + i)], k);
        src[i] = shards[m + i];
      }
      if (gf_invert_matrix(b, inv, k) < 0) {
        fprintf(stderr, "singular\n");
        return 1;
      }
      for (int e = 0; e < m; e++) memcpy(&dec[k * e], &inv[k * e], k);
      ec_init_tables(k, m, dec, d_tbls);
      ec_encode_data(len, k, m, d_tbls, src, out);
    }
    stripes += 8;
    elapsed = now_s() - start;
  } while (elapsed < duration);
  double decode_gbps = (double)stripes * stripe / elapsed / 1e9;
  double decode_cpu_gbps = (double)stripes * stripe / (cpu_s() - cpu_start) / 1e9;
  for (int i = 0; i < m; i++) {
    if (memcmp(out[i], shards[i], len) != 0) {
      fprintf(stderr, "ISA-L decode mismatch on shard %d\n", i);
      return 1;
    }
  }
  printf("{\"encodeGBps\":%.3f,\"decodeGBps\":%.3f,\"encodeCpuGBps\":%.3f,\"decodeCpuGBps\":%.3f}\n", encode_gbps,
         decode_gbps, encode_cpu_gbps, decode_cpu_gbps);
  return 0;
}
