#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifndef O_DIRECTORY
#define O_DIRECTORY 0
#endif

static int fail(oh_io_error *e, const char *op)
{
    if (e != NULL) {
        e->err = errno;
        e->op = op;
    }
    return OH_IO;
}

/* ------------------------------------------------------------------ */
/* Primitives                                                          */
/* ------------------------------------------------------------------ */

int oh_fsync(int fd)
{
    int rc;
#if defined(__APPLE__) && defined(F_FULLFSYNC)
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
    /* Not supported by this file system: fall back to what it offers. */
#endif
    do {
        rc = fsync(fd);
    } while (rc != 0 && errno == EINTR);
    return rc;
}

int oh_fdatasync(int fd)
{
#if defined(__linux__)
    int rc;
    do {
        rc = fdatasync(fd);
    } while (rc != 0 && errno == EINTR);
    return rc;
#else
    return oh_fsync(fd);
#endif
}

int oh_pwrite_all(int fd, const void *data, size_t n, uint64_t offset)
{
    const char *p = (const char *)data;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) { /* no progress and no error: treat as a full disk */
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    return 0;
}

/* Directory part of `path` ("." when it has none) into a new string. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n;
    char *dir;
    if (slash == NULL)
        return strdup(".");
    n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/name" lives in "/" */
    dir = (char *)malloc(n + 1);
    if (dir == NULL)
        return NULL;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return dir;
}

int oh_fsync_parent_dir(const char *path, oh_io_error *e)
{
    int fd, rc = OH_OK;
    char *dir = parent_dir(path);
    if (dir == NULL)
        return OH_NOMEM;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = fail(e, "open the directory to fsync it");
    } else {
        /* Some file systems cannot fsync a directory (EINVAL); there is
         * nothing more to do on those. */
        if (oh_fsync(fd) != 0 && errno != EINVAL)
            rc = fail(e, "fsync the directory");
        close(fd);
    }
    free(dir);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Atomic replace                                                      */
/* ------------------------------------------------------------------ */

/* Open a fresh temporary file beside `path`; its name goes into `tmp`. */
static int open_temp(const char *path, char *tmp, size_t tmp_cap)
{
    static unsigned long counter = 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    int base_len = (int)strlen(base);
    struct timespec ts;
    if (base_len > 200) /* keep the temporary name under NAME_MAX */
        base_len = 200;
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        int fd;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(tmp, tmp_cap, "%.*s.%.*s.%lx%lx%lx.tmp", dir_len, path, base_len, base,
                 (unsigned long)getpid(), n, (unsigned long)ts.tv_nsec);
        /* 0666 and the umask: the mode a plain open() would have given. */
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

int oh_atomic_write(const char *path, const void *data, size_t n, oh_io_error *e)
{
    size_t cap = strlen(path) + 64;
    char *tmp = (char *)malloc(cap);
    struct stat st;
    int fd, rc;
    if (tmp == NULL)
        return OH_NOMEM;
    fd = open_temp(path, tmp, cap);
    if (fd < 0) {
        rc = fail(e, "create a temporary file beside the target");
        free(tmp);
        return rc;
    }
    if (oh_pwrite_all(fd, data, n, 0) != 0) {
        rc = fail(e, "write the temporary file");
        goto undo;
    }
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        fchmod(fd, st.st_mode & 07777) != 0) {
        rc = fail(e, "copy the target's permissions to the temporary file");
        goto undo;
    }
    if (oh_fsync(fd) != 0) {
        rc = fail(e, "fsync the temporary file");
        goto undo;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = fail(e, "close the temporary file");
        goto undo;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = fail(e, "rename the temporary file over the target");
        goto undo;
    }
    free(tmp);
    /* The new content is in place; this makes the rename itself durable. */
    return oh_fsync_parent_dir(path, e);

undo:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return rc;
}
