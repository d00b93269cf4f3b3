/* N-API binding of Intel ISA-L Reed-Solomon for src/dataplane/ec/codec.ts:
 * builds GF(2^8) coding tables and runs ec_encode_data, on the calling thread
 * or on the libuv threadpool. Why it exists and what it measured: README.md.
 *
 * Exports (every argument is validated; a bad one throws, nothing is written):
 *   tables(k, m, sourceIndexes: Uint8Array(k), targetIndexes: Uint8Array(t)) -> Buffer
 *     ec_init_tables for "given shards sourceIndexes, produce shards
 *     targetIndexes" of the systematic Cauchy code (gf_gen_cauchy1_matrix,
 *     MDS for every k + m <= 256). Encode = sources 0..k-1, targets k..k+m-1.
 *     Throws if the chosen sources are singular (cannot happen for Cauchy).
 *   code(tables, sources: Buffer[k], targets: Buffer[t], shardBytes)
 *   codeAsync(tables, sources, targets, shardBytes, callback)
 *     ec_encode_data over shardBytes bytes of each buffer. The async variant
 *     holds references to every buffer until the callback runs.
 *   crc32c(bytes: Uint8Array, previous?: uint32) -> uint32
 *     CRC32C (Castagnoli, as iSCSI/ext4 use it), chained like @node-rs/crc32's
 *     crc32c(bytes, previous): ISA-L's crc32_iscsi interleaves three streams of
 *     the SSE4.2 instruction (measured 2.6 GB/s for @node-rs/crc32 on this VM;
 *     see README.md for ISA-L's figure).
 *   rebuildReadAsync(fds: Int32Array(j*k), offsets: Float64Array(j*k), tables: Buffer[j], outs: Buffer[j], k, shardBytes,
 *                    headers: Buffer(j*k*64), ok: Uint8Array(j*k), callback)
 *     A pool rebuild's kernel for j stripes, on the libuv threadpool, no JS
 *     per record: for each stripe, preads its k source records (64-byte
 *     header + shardBytes of payload at offsets[i] of fds[i]; the caller
 *     keeps the fds open until the callback) into a one-stripe buffer and
 *     checks each CRC32C (shard-record.ts layout: over header bytes 0..51,
 *     56..63, then the payload; stored at 52) while it is still in cache,
 *     into ok[]; a short or failed read is a failed source. If all k pass,
 *     decodes one shard (tables: 1 target) into outs[j][64..] and writes that
 *     record's CRC at outs[j][52..56] (the caller filled the rest of its
 *     header); otherwise outs[j] is left untouched. Each source's header is
 *     copied to headers[i*64..] for the caller's identity checks, which must
 *     pass before an output is used.
 *   writebackAsync(fd, offset, length, callback)
 *     sync_file_range(SYNC_FILE_RANGE_WRITE) on the threadpool: starts the
 *     disk write of a written range without waiting for it, so a later
 *     fdatasync finds it (mostly) done. Never a durability point.
 */
#define _GNU_SOURCE /* RTLD_DEEPBIND */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ISA-L is dlopen'ed with RTLD_DEEPBIND instead of linked: the node binary
 * exports OpenSSL's curve448 `gf_mul`, which would otherwise interpose on
 * ISA-L's own `gf_mul` inside gf_invert_matrix and crash it. DEEPBIND makes
 * libisal resolve its symbols inside itself first; this file calls ISA-L only
 * through the pointers below, never by name. */
static struct {
  __typeof__(&gf_gen_cauchy1_matrix) gen_cauchy1_matrix;
  __typeof__(&gf_invert_matrix) invert_matrix;
  __typeof__(&gf_mul) mul;
  __typeof__(&ec_init_tables) init_tables;
  __typeof__(&ec_encode_data) encode_data;
  __typeof__(&crc32_iscsi) crc32_iscsi;
} isal;

/* Returns NULL on success, else a message naming what is missing. */
static const char* load_isal(void) {
  static char message[256];
  void* library = dlopen("libisal.so.2", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (library == NULL) {
    snprintf(message, sizeof(message), "cannot load ISA-L (install libisal2 / libisal-dev): %s", dlerror());
    return message;
  }
#define LOAD(field, symbol)                                                          \
  if ((isal.field = (__typeof__(isal.field))dlsym(library, #symbol)) == NULL) {      \
    snprintf(message, sizeof(message), "ISA-L has no %s: %s", #symbol, dlerror()); \
    return message;                                                                  \
  }
  LOAD(gen_cauchy1_matrix, gf_gen_cauchy1_matrix)
  LOAD(invert_matrix, gf_invert_matrix)
  LOAD(mul, gf_mul)
  LOAD(init_tables, ec_init_tables)
  LOAD(encode_data, ec_encode_data)
  LOAD(crc32_iscsi, crc32_iscsi)
#undef LOAD
  return NULL;
}

/* Policies allow k <= 16, m <= 4; the addon accepts anything ISA-L can code. */
#define MAX_SHARDS 64

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "N-API call failed: " #call); \
      return NULL;                                         \
    }                                                      \
  } while (0)

static napi_value throw_range(napi_env env, const char* message) {
  napi_throw_range_error(env, "ERR_EC_ARGUMENT", message);
  return NULL;
}

static int get_int(napi_env env, napi_value value, int32_t* out) {
  return napi_get_value_int32(env, value, out) == napi_ok;
}

static int get_bytes(napi_env env, napi_value value, uint8_t** data, size_t* length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  napi_value arraybuffer;
  size_t offset;
  void* pointer;
  if (napi_get_typedarray_info(env, value, &type, length, &pointer, &arraybuffer, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *data = (uint8_t*)pointer; /* already adjusted by byteOffset */
  return 1;
}

static napi_value Tables(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t k, m;
  uint8_t *sources, *targets;
  size_t source_count, target_count;
  if (argc != 4 || !get_int(env, argv[0], &k) || !get_int(env, argv[1], &m) ||
      !get_bytes(env, argv[2], &sources, &source_count) || !get_bytes(env, argv[3], &targets, &target_count)) {
    return throw_range(env, "tables(k, m, sourceIndexes: Uint8Array, targetIndexes: Uint8Array)");
  }
  int n = k + m;
  if (k < 1 || m < 1 || n > MAX_SHARDS) return throw_range(env, "tables: k, m out of range");
  if ((int)source_count != k || target_count < 1 || (int)target_count > n) {
    return throw_range(env, "tables: need k source indexes and 1..k+m target indexes");
  }
  for (size_t i = 0; i < source_count; i++) {
    if (sources[i] >= n) return throw_range(env, "tables: source index out of range");
  }
  for (size_t i = 0; i < target_count; i++) {
    if (targets[i] >= n) return throw_range(env, "tables: target index out of range");
  }

  uint8_t generator[MAX_SHARDS * MAX_SHARDS];
  uint8_t chosen[MAX_SHARDS * MAX_SHARDS];
  uint8_t inverse[MAX_SHARDS * MAX_SHARDS];
  uint8_t rows[MAX_SHARDS * MAX_SHARDS];
  isal.gen_cauchy1_matrix(generator, n, k);
  /* Shards are generator x data, so data = inverse(chosen rows) x sources. */
  for (int i = 0; i < k; i++) memcpy(&chosen[k * i], &generator[k * sources[i]], k);
  if (isal.invert_matrix(chosen, inverse, k) < 0) return throw_range(env, "tables: source shards are not independent");
  /* Target shard t = generator[t] x data = (generator[t] x inverse) x sources. */
  for (size_t t = 0; t < target_count; t++) {
    const uint8_t* g = &generator[k * targets[t]];
    for (int j = 0; j < k; j++) {
      uint8_t sum = 0;
      for (int i = 0; i < k; i++) sum ^= isal.mul(g[i], inverse[k * i + j]);
      rows[k * t + j] = sum;
    }
  }
  napi_value result;
  void* tables;
  CHECK(env, napi_create_buffer(env, 32 * (size_t)k * target_count, &tables, &result));
  isal.init_tables(k, (int)target_count, rows, (uint8_t*)tables);
  return result;
}

typedef struct {
  uint8_t* tables;
  int k;
  int rows;
  int shard_bytes;
  uint8_t* sources[MAX_SHARDS];
  uint8_t* targets[MAX_SHARDS];
} Job;

/* Parse (tables, sources[], targets[], shardBytes) into a Job; 0 after throwing. */
static int parse_job(napi_env env, napi_value* argv, Job* job, napi_value* buffers, size_t* buffer_count) {
  size_t tables_bytes;
  uint32_t source_count, target_count;
  bool is_array;
  int32_t shard_bytes;
  if (!get_bytes(env, argv[0], &job->tables, &tables_bytes) || napi_is_array(env, argv[1], &is_array) != napi_ok ||
      !is_array || napi_get_array_length(env, argv[1], &source_count) != napi_ok ||
      napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &target_count) != napi_ok || !get_int(env, argv[3], &shard_bytes)) {
    throw_range(env, "code(tables: Buffer, sources: Buffer[], targets: Buffer[], shardBytes)");
    return 0;
  }
  if (source_count < 1 || target_count < 1 || source_count + target_count > MAX_SHARDS || shard_bytes < 1 ||
      tables_bytes != 32 * (size_t)source_count * target_count) {
    throw_range(env, "code: tables do not match the shard counts, or shardBytes < 1");
    return 0;
  }
  job->k = (int)source_count;
  job->rows = (int)target_count;
  job->shard_bytes = shard_bytes;
  buffers[(*buffer_count)++] = argv[0];
  for (uint32_t i = 0; i < source_count + target_count; i++) {
    int is_source = i < source_count;
    napi_value element;
    uint8_t* data;
    size_t length;
    if (napi_get_element(env, argv[is_source ? 1 : 2], is_source ? i : i - source_count, &element) != napi_ok ||
        !get_bytes(env, element, &data, &length)) {
      throw_range(env, "code: every shard must be a Buffer");
      return 0;
    }
    if (length < (size_t)shard_bytes) {
      throw_range(env, "code: a shard is shorter than shardBytes");
      return 0;
    }
    if (is_source) job->sources[i] = data;
    else job->targets[i - source_count] = data;
    buffers[(*buffer_count)++] = element;
  }
  return 1;
}

static napi_value Code(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 4) return throw_range(env, "code(tables, sources, targets, shardBytes)");
  Job job;
  napi_value buffers[MAX_SHARDS + 1];
  size_t buffer_count = 0;
  if (!parse_job(env, argv, &job, buffers, &buffer_count)) return NULL;
  isal.encode_data(job.shard_bytes, job.k, job.rows, job.tables, job.sources, job.targets);
  return NULL;
}

typedef struct {
  Job job;
  napi_async_work work;
  napi_ref callback;
  napi_ref buffers[MAX_SHARDS + 1]; /* keep tables and shards alive while a worker thread uses them */
  size_t buffer_count;
} AsyncJob;

static void execute(napi_env env, void* data) {
  (void)env;
  Job* job = &((AsyncJob*)data)->job;
  isal.encode_data(job->shard_bytes, job->k, job->rows, job->tables, job->sources, job->targets);
}

static void complete(napi_env env, napi_status status, void* data) {
  AsyncJob* async = (AsyncJob*)data;
  napi_value callback, global, argv[1];
  napi_get_reference_value(env, async->callback, &callback);
  napi_get_global(env, &global);
  if (status == napi_ok) {
    napi_get_undefined(env, &argv[0]);
  } else {
    napi_value message;
    napi_create_string_utf8(env, "EC async work was cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &argv[0]);
  }
  for (size_t i = 0; i < async->buffer_count; i++) napi_delete_reference(env, async->buffers[i]);
  napi_delete_reference(env, async->callback);
  napi_delete_async_work(env, async->work);
  free(async);
  napi_call_function(env, global, callback, 1, argv, NULL);
}

static napi_value CodeAsync(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type;
  if (argc != 5 || napi_typeof(env, argv[4], &type) != napi_ok || type != napi_function) {
    return throw_range(env, "codeAsync(tables, sources, targets, shardBytes, callback)");
  }
  AsyncJob* async = calloc(1, sizeof(AsyncJob));
  if (async == NULL) {
    napi_throw_error(env, NULL, "codeAsync: out of memory");
    return NULL;
  }
  napi_value buffers[MAX_SHARDS + 1];
  size_t buffer_count = 0;
  if (!parse_job(env, argv, &async->job, buffers, &buffer_count)) {
    free(async);
    return NULL;
  }
  napi_value name;
  CHECK(env, napi_create_string_utf8(env, "couchestor:ec-isal", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, execute, complete, async, &async->work));
  CHECK(env, napi_create_reference(env, argv[4], 1, &async->callback));
  for (size_t i = 0; i < buffer_count; i++) CHECK(env, napi_create_reference(env, buffers[i], 1, &async->buffers[i]));
  async->buffer_count = buffer_count;
  CHECK(env, napi_queue_async_work(env, async->work));
  return NULL;
}

static napi_value Crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t* data;
  size_t length;
  uint32_t previous = 0;
  if (argc < 1 || argc > 2 || !get_bytes(env, argv[0], &data, &length) ||
      (argc == 2 && napi_get_value_uint32(env, argv[1], &previous) != napi_ok)) {
    return throw_range(env, "crc32c(bytes: Uint8Array, previous?: uint32)");
  }
  /* crc32_iscsi takes an int length: longer inputs go in pieces. It neither
   * inverts its input nor its output, the standard CRC32C does both. */
  uint32_t crc = ~previous;
  while (length > 0) {
    int piece = length > (size_t)0x40000000 ? 0x40000000 : (int)length;
    crc = isal.crc32_iscsi(data, piece, crc);
    data += piece;
    length -= (size_t)piece;
  }
  napi_value result;
  CHECK(env, napi_create_uint32(env, ~crc, &result));
  return result;
}

/* ---- rebuildReadAsync ---- */

#define RECORD_HEADER_BYTES 64
#define RECORD_CRC_OFFSET 52

static uint32_t record_crc(const uint8_t* record, int payload_bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  crc = isal.crc32_iscsi((unsigned char*)record, RECORD_CRC_OFFSET, crc);
  crc = isal.crc32_iscsi((unsigned char*)record + RECORD_CRC_OFFSET + 4, RECORD_HEADER_BYTES - RECORD_CRC_OFFSET - 4, crc);
  crc = isal.crc32_iscsi((unsigned char*)record + RECORD_HEADER_BYTES, payload_bytes, crc);
  return ~crc;
}

static uint32_t load_le32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

typedef struct {
  napi_async_work work;
  napi_ref callback;
  napi_ref* refs;
  size_t ref_count;
  int stripes;
  int k;
  int shard_bytes;
  int32_t* fds;      /* stripes * k */
  double* offsets;   /* stripes * k */
  uint8_t** tables;  /* stripes */
  uint8_t** outs;    /* stripes */
  uint8_t* headers;  /* stripes * k * 64 */
  uint8_t* ok;       /* stripes * k */
} ReadRebuildJob;

static int pread_full(int fd, uint8_t* into, size_t length, off_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, into + done, length - done, offset + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0; /* error or end of file inside the record */
    done += (size_t)n;
  }
  return 1;
}

static void read_rebuild_execute(napi_env env, void* data) {
  (void)env;
  ReadRebuildJob* job = (ReadRebuildJob*)data;
  size_t record_bytes = (size_t)RECORD_HEADER_BYTES + (size_t)job->shard_bytes;
  /* One stripe's sources at a time: each is CRC-checked right after its read, while in cache. */
  uint8_t* scratch = malloc(record_bytes * (size_t)job->k);
  for (int s = 0; s < job->stripes; s++) {
    int all_ok = scratch != NULL;
    uint8_t* payloads[MAX_SHARDS];
    for (int i = 0; i < job->k; i++) {
      int at = s * job->k + i;
      uint8_t* record = scratch + (size_t)i * record_bytes;
      int good = scratch != NULL && pread_full(job->fds[at], record, record_bytes, (off_t)job->offsets[at]) &&
                 record_crc(record, job->shard_bytes) == load_le32(record + RECORD_CRC_OFFSET);
      if (scratch != NULL) memcpy(job->headers + (size_t)at * RECORD_HEADER_BYTES, record, RECORD_HEADER_BYTES);
      job->ok[at] = (uint8_t)good;
      all_ok &= good;
      payloads[i] = record + RECORD_HEADER_BYTES;
    }
    if (!all_ok) continue; /* never decode from a source that failed its read or check */
    uint8_t* out = job->outs[s];
    uint8_t* target = out + RECORD_HEADER_BYTES;
    isal.encode_data(job->shard_bytes, job->k, 1, job->tables[s], payloads, &target);
    uint32_t crc = record_crc(out, job->shard_bytes);
    out[RECORD_CRC_OFFSET] = (uint8_t)crc;
    out[RECORD_CRC_OFFSET + 1] = (uint8_t)(crc >> 8);
    out[RECORD_CRC_OFFSET + 2] = (uint8_t)(crc >> 16);
    out[RECORD_CRC_OFFSET + 3] = (uint8_t)(crc >> 24);
  }
  free(scratch);
}

static void free_read_rebuild(napi_env env, ReadRebuildJob* job) {
  for (size_t i = 0; i < job->ref_count; i++) napi_delete_reference(env, job->refs[i]);
  if (job->callback != NULL) napi_delete_reference(env, job->callback);
  if (job->work != NULL) napi_delete_async_work(env, job->work);
  free(job->refs);
  free(job->tables);
  free(job->outs);
  free(job);
}

static void read_rebuild_complete(napi_env env, napi_status status, void* data) {
  ReadRebuildJob* job = (ReadRebuildJob*)data;
  napi_value callback, global, argv[1];
  napi_get_reference_value(env, job->callback, &callback);
  napi_get_global(env, &global);
  if (status == napi_ok) {
    napi_get_undefined(env, &argv[0]);
  } else {
    napi_value message;
    napi_create_string_utf8(env, "rebuild async work was cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &argv[0]);
  }
  free_read_rebuild(env, job);
  napi_call_function(env, global, callback, 1, argv, NULL);
}

static int get_typed(napi_env env, napi_value value, napi_typedarray_type want, void** data, size_t* length) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value arraybuffer;
  size_t offset;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return 0;
  if (napi_get_typedarray_info(env, value, &type, length, data, &arraybuffer, &offset) != napi_ok) return 0;
  return type == want;
}

static int keep(napi_env env, ReadRebuildJob* job, napi_value value) {
  if (napi_create_reference(env, value, 1, &job->refs[job->ref_count]) != napi_ok) return 0;
  job->ref_count++;
  return 1;
}

static napi_value RebuildReadAsync(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t k, shard_bytes;
  uint32_t table_count, out_count;
  bool a1, a2;
  void *fds, *offsets;
  size_t fd_count, offset_count, header_bytes, ok_bytes;
  uint8_t *headers, *ok;
  napi_valuetype type;
  if (argc != 9 || !get_typed(env, argv[0], napi_int32_array, &fds, &fd_count) ||
      !get_typed(env, argv[1], napi_float64_array, &offsets, &offset_count) || napi_is_array(env, argv[2], &a1) != napi_ok || !a1 ||
      napi_is_array(env, argv[3], &a2) != napi_ok || !a2 || !get_int(env, argv[4], &k) || !get_int(env, argv[5], &shard_bytes) ||
      !get_bytes(env, argv[6], &headers, &header_bytes) || !get_bytes(env, argv[7], &ok, &ok_bytes) ||
      napi_typeof(env, argv[8], &type) != napi_ok || type != napi_function || napi_get_array_length(env, argv[2], &table_count) != napi_ok ||
      napi_get_array_length(env, argv[3], &out_count) != napi_ok) {
    return throw_range(env, "rebuildReadAsync(fds: Int32Array, offsets: Float64Array, tables: Buffer[], outs: Buffer[], k, shardBytes, headers: Buffer, ok: Uint8Array, callback)");
  }
  size_t sources = (size_t)out_count * (size_t)(k > 0 ? k : 0);
  if (k < 1 || k >= MAX_SHARDS || shard_bytes < 1 || shard_bytes > 0x7fffffff - RECORD_HEADER_BYTES || out_count < 1 ||
      table_count != out_count || fd_count != sources || offset_count != sources || ok_bytes < sources ||
      header_bytes < sources * RECORD_HEADER_BYTES) {
    return throw_range(env, "rebuildReadAsync: need k fds/offsets, one table and output per stripe, headers and ok sized to match");
  }
  for (size_t i = 0; i < sources; i++) {
    double o = ((double*)offsets)[i];
    if (((int32_t*)fds)[i] < 0 || !(o >= 0) || o > 9007199254740991.0 || o != (double)(int64_t)o) return throw_range(env, "rebuildReadAsync: bad fd or offset");
  }
  ReadRebuildJob* job = calloc(1, sizeof(ReadRebuildJob));
  if (job == NULL) {
    napi_throw_error(env, NULL, "rebuildReadAsync: out of memory");
    return NULL;
  }
  job->stripes = (int)out_count;
  job->k = k;
  job->shard_bytes = shard_bytes;
  job->fds = (int32_t*)fds;
  job->offsets = (double*)offsets;
  job->headers = headers;
  job->ok = ok;
  job->refs = calloc(table_count + out_count + 4, sizeof(napi_ref));
  job->tables = calloc(table_count, sizeof(uint8_t*));
  job->outs = calloc(out_count, sizeof(uint8_t*));
  if (job->refs == NULL || job->tables == NULL || job->outs == NULL) {
    free_read_rebuild(env, job);
    napi_throw_error(env, NULL, "rebuildReadAsync: out of memory");
    return NULL;
  }
  size_t record_bytes = (size_t)RECORD_HEADER_BYTES + (size_t)shard_bytes;
  for (uint32_t i = 0; i < out_count; i++) {
    napi_value t, o;
    size_t tl, ol;
    if (napi_get_element(env, argv[2], i, &t) != napi_ok || !get_bytes(env, t, &job->tables[i], &tl) || tl < 32 * (size_t)k ||
        napi_get_element(env, argv[3], i, &o) != napi_ok || !get_bytes(env, o, &job->outs[i], &ol) || ol < record_bytes || !keep(env, job, t) ||
        !keep(env, job, o)) {
      free_read_rebuild(env, job);
      return throw_range(env, "rebuildReadAsync: tables[i] and outs[i] must be Buffers of 32*k and 64+shardBytes bytes");
    }
  }
  if (!keep(env, job, argv[0]) || !keep(env, job, argv[1]) || !keep(env, job, argv[6]) || !keep(env, job, argv[7])) {
    free_read_rebuild(env, job);
    napi_throw_error(env, NULL, "rebuildReadAsync: cannot reference an argument");
    return NULL;
  }
  napi_value name;
  if (napi_create_string_utf8(env, "couchestor:ec-rebuild-read", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, read_rebuild_execute, read_rebuild_complete, job, &job->work) != napi_ok ||
      napi_create_reference(env, argv[8], 1, &job->callback) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    free_read_rebuild(env, job);
    napi_throw_error(env, NULL, "rebuildReadAsync: cannot queue the work");
    return NULL;
  }
  return NULL;
}

/* ---- writebackAsync ---- */

typedef struct {
  napi_async_work work;
  napi_ref callback;
  int fd;
  int64_t offset;
  int64_t length;
  int error; /* errno, 0 on success */
} WritebackJob;

static void writeback_execute(napi_env env, void* data) {
  (void)env;
  WritebackJob* job = (WritebackJob*)data;
  job->error = sync_file_range(job->fd, job->offset, job->length, SYNC_FILE_RANGE_WRITE) == 0 ? 0 : errno;
}

static void writeback_complete(napi_env env, napi_status status, void* data) {
  WritebackJob* job = (WritebackJob*)data;
  napi_value callback, global, argv[1];
  napi_get_reference_value(env, job->callback, &callback);
  napi_get_global(env, &global);
  if (status == napi_ok && job->error == 0) {
    napi_get_undefined(env, &argv[0]);
  } else {
    napi_value message;
    napi_create_string_utf8(env, status == napi_ok ? strerror(job->error) : "writeback cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &argv[0]);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, callback, 1, argv, NULL);
}

static napi_value WritebackAsync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t offset, length;
  napi_valuetype type;
  if (argc != 4 || !get_int(env, argv[0], &fd) || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || napi_typeof(env, argv[3], &type) != napi_ok ||
      type != napi_function || fd < 0 || offset < 0 || length < 0) {
    return throw_range(env, "writebackAsync(fd, offset, length, callback)");
  }
  WritebackJob* job = calloc(1, sizeof(WritebackJob));
  if (job == NULL) {
    napi_throw_error(env, NULL, "writebackAsync: out of memory");
    return NULL;
  }
  job->fd = fd;
  job->offset = offset;
  job->length = length;
  napi_value name;
  if (napi_create_string_utf8(env, "couchestor:writeback", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, writeback_execute, writeback_complete, job, &job->work) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &job->callback) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->work != NULL) napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, NULL, "writebackAsync: cannot queue the work");
    return NULL;
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  const char* failure = load_isal();
  if (failure != NULL) {
    napi_throw_error(env, "ERR_EC_ISAL_MISSING", failure);
    return NULL;
  }
  napi_property_descriptor properties[] = {
      {"tables", NULL, Tables, NULL, NULL, NULL, napi_enumerable, NULL},
      {"code", NULL, Code, NULL, NULL, NULL, napi_enumerable, NULL},
      {"codeAsync", NULL, CodeAsync, NULL, NULL, NULL, napi_enumerable, NULL},
      {"crc32c", NULL, Crc32c, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writebackAsync", NULL, WritebackAsync, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rebuildReadAsync", NULL, RebuildReadAsync, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
