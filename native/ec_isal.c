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
 */
#define _GNU_SOURCE /* RTLD_DEEPBIND */
#include <dlfcn.h>
#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  };
  CHECK(env, napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
