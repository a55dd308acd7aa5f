/* Durable file writes shared by the state codec and the log.
 *
 * Failures return OH_IO and fill an oh_io_error: errno and the step that
 * failed (a static string), so the wrapper can raise StorageError saying
 * exactly which system call went wrong. */
#ifndef OH_FILEIO_H
#define OH_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include "oh_status.h"

typedef struct {
    int err;        /* errno of the failed call */
    const char *op; /* what was being done, e.g. "fsync the temporary file" */
} oh_io_error;

/* fsync (F_FULLFSYNC on macOS, where plain fsync does not reach the disk). */
int oh_fsync(int fd);
/* fdatasync where it exists: enough for appends, whose size change it flushes. */
int oh_fdatasync(int fd);
/* Write all n bytes at `offset`, retrying short writes and EINTR. 0 or -1. */
int oh_pwrite_all(int fd, const void *data, size_t n, uint64_t offset);
/* fsync the directory holding `path`, so a create or rename in it is durable. */
int oh_fsync_parent_dir(const char *path, oh_io_error *e);

/* Replace `path` with `data` so that readers and crashes see either the old
 * or the new content, never a mix: write a temporary file in the same
 * directory, fsync it, rename it over `path`, fsync the directory. An existing
 * target's permission bits are kept. The temporary file is removed on failure. */
int oh_atomic_write(const char *path, const void *data, size_t n, oh_io_error *e);

#endif
