/* N-API binding of lseek(SEEK_DATA) and fallocate(PUNCH_HOLE) for
 * src/dataplane/volumes/seek-data.ts, of getsockopt(TCP_INFO)'s
 * bytes-acked count for src/dataplane/s3/server.ts, and of fcntl OFD locks
 * for src/data-dir-lock.ts. The first two let a
 * volume tell a never-written (hole) chunk from one that may hold bytes
 * without reading it, and give back the disk space of file ranges no chunk
 * uses any more. Node has none of these bindings. Separate from ec_isal.c so the volume path does not depend on
 * ISA-L being loadable.
 *
 * Exports:
 *   firstDataOffsetAsync(fd, offset, callback(error, dataOffset))
 *     On the libuv threadpool (ext4 and xfs take the inode lock for SEEK_DATA,
 *     which a concurrent buffered write on the same file holds, so this must
 *     not run on the event loop): dataOffset = lseek(fd, offset, SEEK_DATA),
 *     the start of the first data extent at or after offset (or offset itself
 *     on a file system without hole tracking: the whole file counts as data),
 *     or -1 when the kernel answers ENXIO (no data at or after offset; offset
 *     at or past end of file). Any other errno is an Error with `code` set to
 *     the errno name (EBADF, EINVAL, ...).
 *   punchHoleAsync(fd, offset, length, callback(error))
 *     On the libuv threadpool (it frees extents, and takes the inode lock):
 *     fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
 *     length): [offset, offset + length) reads as zeros afterwards and its
 *     blocks are freed; the file's size is unchanged. Errors as above, with
 *     EOPNOTSUPP when the file system cannot punch holes (the caller carries
 *     on without).
 *   tcpBytesAcked(fd) -> number
 *     Synchronous (one getsockopt, no lock held long, about a microsecond):
 *     tcpi_bytes_acked of getsockopt(fd, IPPROTO_TCP, TCP_INFO), the bytes the
 *     peer of TCP socket fd has acknowledged since the connection began (RFC
 *     4898 tcpEStatsAppHCThruOctetsAcked, Linux >= 4.1). It only grows, so a
 *     change between two calls is the client taking bytes; a stalled client
 *     (zero window) leaves it unchanged. Exact up to 2^53 bytes (a JS number).
 *     -1 when the kernel's tcp_info is too old to carry the field. Any errno
 *     (EBADF closed fd, ENOTSOCK, EOPNOTSUPP/ENOPROTOOPT not TCP) throws an
 *     Error with `code` set to the errno name. Used by the S3 send idle check
 *     (src/dataplane/s3/server.ts ResponseSink) in place of reading
 *     /proc/net/tcp, which formats every socket on the node per call.
 *   lockFileExclusive(fd) -> boolean
 *     Synchronous (one fcntl, never waits): takes an open-file-description
 *     write lock (F_OFD_SETLK, F_WRLCK, the whole file) on fd, which must be
 *     open for writing. true when taken (or already held through this same
 *     open file description), false when another open file description holds
 *     a conflicting lock (EAGAIN/EACCES), in this process or any other. The
 *     lock lasts until the last descriptor of that open file description
 *     closes, so the kernel drops it when the process dies however it dies
 *     (SIGKILL included): no stale lock. Unlike classic POSIX (F_SETLK)
 *     locks, closing another descriptor of the same file does not drop it,
 *     and two opens in one process conflict. Used by src/data-dir-lock.ts
 *     (one process at a time on a data directory). Other errno (EINVAL: a
 *     kernel before 3.15 without OFD locks, ENOLCK, EBADF) throws an Error
 *     with `code` set to the errno name.
 *   lockFileHeld(fd) -> boolean
 *     Synchronous: F_OFD_GETLK for a whole-file write lock on fd (any access
 *     mode): true when another open file description holds a lock on the
 *     file that would conflict, false when none does. Takes nothing: the CLI
 *     asks whether a daemon is starting without racing its start. Errors as
 *     lockFileExclusive.
 */
#define _GNU_SOURCE /* SEEK_DATA, fallocate, F_OFD_SETLK */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_acked (glibc's may lack it) */
#include <netinet/in.h> /* IPPROTO_TCP */
#include <stddef.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { JOB_SEEK_DATA, JOB_PUNCH_HOLE } JobKind;

typedef struct {
  napi_async_work work;
  napi_ref callback;
  JobKind kind;
  int fd;
  int64_t offset;
  int64_t length; /* JOB_PUNCH_HOLE only */
  int64_t result; /* JOB_SEEK_DATA: data offset, or -1 for ENXIO */
  int error;      /* errno (other than ENXIO for a seek), 0 on success */
} SeekJob;

static void seek_execute(napi_env env, void* data) {
  (void)env;
  SeekJob* job = (SeekJob*)data;
  if (job->kind == JOB_PUNCH_HOLE) {
    int rc;
    do {
      rc = fallocate(job->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)job->offset, (off_t)job->length);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) job->error = errno;
    return;
  }
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
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPERM: return "EPERM";
    case ENODEV: return "ENODEV";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ETXTBSY: return "ETXTBSY";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case ENOLCK: return "ENOLCK";
    default: return "EFSOP";
  }
}

static void seek_complete(napi_env env, napi_status status, void* data) {
  SeekJob* job = (SeekJob*)data;
  napi_value callback, global, argv[2];
  napi_get_reference_value(env, job->callback, &callback);
  napi_get_global(env, &global);
  if (status == napi_ok && job->error == 0) {
    napi_get_null(env, &argv[0]);
    if (job->kind == JOB_PUNCH_HOLE) napi_get_undefined(env, &argv[1]);
    else napi_create_int64(env, job->result, &argv[1]);
  } else {
    napi_value message, code;
    napi_create_string_utf8(env, status == napi_ok ? strerror(job->error) : "cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_string_utf8(env, status == napi_ok ? errno_code(job->error) : "ECANCELED", NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, message, &argv[0]);
    napi_get_undefined(env, &argv[1]);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, callback, 2, argv, NULL);
}

/* Queues `job` (fields set but work and callback) on the threadpool; on failure frees it and throws. */
static void queue_job(napi_env env, SeekJob* job, napi_value callback, const char* what) {
  napi_value name;
  if (napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, seek_execute, seek_complete, job, &job->work) != napi_ok ||
      napi_create_reference(env, callback, 1, &job->callback) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->callback != NULL) napi_delete_reference(env, job->callback);
    if (job->work != NULL) napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, NULL, "fs_seek: cannot queue the work");
  }
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
  job->kind = JOB_SEEK_DATA;
  job->fd = fd;
  job->offset = offset;
  queue_job(env, job, argv[2], "couchestor:seek-data");
  return NULL;
}

static napi_value PunchHoleAsync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "punchHoleAsync: cannot read arguments");
    return NULL;
  }
  int32_t fd;
  int64_t offset, length;
  napi_valuetype type;
  if (argc != 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || napi_typeof(env, argv[3], &type) != napi_ok || type != napi_function || fd < 0 ||
      offset < 0 || length <= 0 || offset > INT64_MAX - length) {
    napi_throw_range_error(env, "ERR_FS_SEEK_ARGUMENT", "punchHoleAsync(fd >= 0, offset >= 0, length > 0, callback)");
    return NULL;
  }
  SeekJob* job = calloc(1, sizeof(SeekJob));
  if (job == NULL) {
    napi_throw_error(env, NULL, "punchHoleAsync: out of memory");
    return NULL;
  }
  job->kind = JOB_PUNCH_HOLE;
  job->fd = fd;
  job->offset = offset;
  job->length = length;
  queue_job(env, job, argv[3], "couchestor:punch-hole");
  return NULL;
}

static napi_value TcpBytesAcked(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_range_error(env, "ERR_FS_SEEK_ARGUMENT", "tcpBytesAcked(fd >= 0)");
    return NULL;
  }
  struct tcp_info tcp;
  socklen_t length = sizeof(tcp);
  memset(&tcp, 0, sizeof(tcp));
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &tcp, &length) != 0) {
    int error = errno;
    napi_value message, code, exception;
    napi_create_string_utf8(env, strerror(error), NAPI_AUTO_LENGTH, &message);
    napi_create_string_utf8(env, errno_code(error), NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, message, &exception);
    napi_throw(env, exception);
    return NULL;
  }
  napi_value result;
  /* A kernel before 4.1 fills a shorter struct: the field is not there. */
  if (length < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(tcp.tcpi_bytes_acked)) napi_create_double(env, -1, &result);
  else napi_create_double(env, (double)tcp.tcpi_bytes_acked, &result);
  return result;
}

/* Throws an Error for errno `error` with `code` set to its name. */
static void throw_errno(napi_env env, int error) {
  napi_value message, code, exception;
  napi_create_string_utf8(env, strerror(error), NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, errno_code(error), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &exception);
  napi_throw(env, exception);
}

/* Reads the single fd argument of the lock functions; throws and returns -1 on a bad one. */
static int32_t lock_fd_argument(napi_env env, napi_callback_info info, const char* usage) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_range_error(env, "ERR_FS_SEEK_ARGUMENT", usage);
    return -1;
  }
  return fd;
}

static napi_value LockFileExclusive(napi_env env, napi_callback_info info) {
  int32_t fd = lock_fd_argument(env, info, "lockFileExclusive(fd >= 0)");
  if (fd < 0) return NULL;
  struct flock lock;
  memset(&lock, 0, sizeof(lock));
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET; /* l_start 0, l_len 0: the whole file, however long it grows */
  int rc;
  do {
    rc = fcntl(fd, F_OFD_SETLK, &lock);
  } while (rc != 0 && errno == EINTR);
  napi_value result;
  if (rc == 0) {
    napi_get_boolean(env, true, &result);
    return result;
  }
  if (errno == EAGAIN || errno == EACCES) {
    napi_get_boolean(env, false, &result);
    return result;
  }
  throw_errno(env, errno);
  return NULL;
}

static napi_value LockFileHeld(napi_env env, napi_callback_info info) {
  int32_t fd = lock_fd_argument(env, info, "lockFileHeld(fd >= 0)");
  if (fd < 0) return NULL;
  struct flock lock;
  memset(&lock, 0, sizeof(lock));
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  int rc;
  do {
    rc = fcntl(fd, F_OFD_GETLK, &lock);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    throw_errno(env, errno);
    return NULL;
  }
  napi_value result;
  napi_get_boolean(env, lock.l_type != F_UNLCK, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"firstDataOffsetAsync", NULL, FirstDataOffsetAsync, NULL, NULL, NULL, napi_enumerable, NULL},
      {"punchHoleAsync", NULL, PunchHoleAsync, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpBytesAcked", NULL, TcpBytesAcked, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lockFileExclusive", NULL, LockFileExclusive, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lockFileHeld", NULL, LockFileHeld, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties) != napi_ok) {
    napi_throw_error(env, NULL, "fs_seek: cannot define exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
