/* N-API binding of lseek(SEEK_DATA) for src/dataplane/volumes/seek-data.ts:
 * lets a volume tell a never-written (hole) chunk from one that may hold bytes
 * without reading it. Node has no lseek binding. Separate from ec_isal.c so the
 * volume path does not depend on ISA-L being loadable.
 *
 * Export:
 *   firstDataOffsetAsync(fd, offset, callback(error, dataOffset))
 *     On the libuv threadpool (ext4 and xfs take the inode lock for SEEK_DATA,
 *     which a concurrent buffered write on the same file holds, so this must
 *     not run on the event loop): dataOffset = lseek(fd, offset, SEEK_DATA),
 *     the start of the first data extent at or after offset (or offset itself
 *     on a file system without hole tracking: the whole file counts as data),
 *     or -1 when the kernel answers ENXIO (no data at or after offset; offset
 *     at or past end of file). Any other errno is an Error with `code` set to
 *     the errno name (EBADF, EINVAL, ...).
 */
#define _GNU_SOURCE /* SEEK_DATA */
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_ref callback;
  int fd;
  int64_t offset;
  int64_t result; /* data offset, or -1 for ENXIO */
  int error;      /* errno other than ENXIO, 0 on success */
} SeekJob;

static void seek_execute(napi_env env, void* data) {
  (void)env;
  SeekJob* job = (SeekJob*)data;
  off_t at = lseek(job->fd, (off_t)job->offset, SEEK_DATA);
  if (at >= 0) {
    job->result = (int64_t)at;
  } else if (errno == ENXIO) {
    job->result = -1;
  } else {
    job->error = errno;
  }
}

static const char* errno_code(int error) {
  switch (error) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EOVERFLOW: return "EOVERFLOW";
    case ESPIPE: return "ESPIPE";
    default: return "ESEEK";
  }
}

static void seek_complete(napi_env env, napi_status status, void* data) {
  SeekJob* job = (SeekJob*)data;
  napi_value callback, global, argv[2];
  napi_get_reference_value(env, job->callback, &callback);
  napi_get_global(env, &global);
  if (status == napi_ok && job->error == 0) {
    napi_get_null(env, &argv[0]);
    napi_create_int64(env, job->result, &argv[1]);
  } else {
    napi_value message, code;
    napi_create_string_utf8(env, status == napi_ok ? strerror(job->error) : "lseek cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_string_utf8(env, status == napi_ok ? errno_code(job->error) : "ECANCELED", NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, message, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, callback, 2, argv, NULL);
}

static napi_value FirstDataOffsetAsync(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "firstDataOffsetAsync: cannot read arguments");
    return NULL;
  }
  int32_t fd;
  int64_t offset;
  napi_valuetype type;
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_typeof(env, argv[2], &type) != napi_ok || type != napi_function || fd < 0 || offset < 0) {
    napi_throw_range_error(env, "ERR_FS_SEEK_ARGUMENT", "firstDataOffsetAsync(fd >= 0, offset >= 0, callback)");
    return NULL;
  }
  SeekJob* job = calloc(1, sizeof(SeekJob));
  if (job == NULL) {
    napi_throw_error(env, NULL, "firstDataOffsetAsync: out of memory");
    return NULL;
  }
  job->fd = fd;
  job->offset = offset;
  napi_value name;
  if (napi_create_string_utf8(env, "couchestor:seek-data", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, seek_execute, seek_complete, job, &job->work) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &job->callback) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->callback != NULL) napi_delete_reference(env, job->callback);
    if (job->work != NULL) napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, NULL, "firstDataOffsetAsync: cannot queue the work");
    return NULL;
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"firstDataOffsetAsync", NULL, FirstDataOffsetAsync, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties) != napi_ok) {
    napi_throw_error(env, NULL, "fs_seek: cannot define exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
