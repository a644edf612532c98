/* pidfile.c -- see pidfile.h. */
#include "daemon/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* How many times the file may change under us between looking at it and
 * taking it (another daemon starting at the same moment) before giving up. */
#define PIDFILE_TRIES 8

struct pidfile {
    char *path;                /* owned */
    int fd;                    /* open on the file, locked */
};

/* The pid a pid file FD names, or 0. */
static pid_t read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    return v > 0 && (*end == '\n' || *end == '\0') ? (pid_t)v : 0;
}

/* A temporary file beside PATH (its name in TMP, TMPLEN bytes) holding our
 * pid, locked. Its descriptor, or -1 with errno (nothing left behind). */
static int make_tmp(const char *path, char *tmp, size_t tmplen)
{
    if ((size_t)snprintf(tmp, tmplen, "%s.XXXXXX", path) >= tmplen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return -1;
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    /* pid files are read by anyone (init scripts, monitoring) */
    errno = 0;
    if (fchmod(fd, 0644) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0 ||
        write(fd, line, (size_t)n) != n) {
        int e = errno ? errno : EIO;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    return fd;
}

static bool same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* One try. The locked descriptor of the file now at PATH, or -1 with errno:
 * EWOULDBLOCK when another process holds it (its pid in *HOLDER), ESTALE
 * when it changed under us (try again), else what failed. */
static int try_take(const char *path, pid_t *holder, pid_t *stale)
{
    char tmp[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        /* none: link() creates the name only if nobody else did meanwhile */
        int t = make_tmp(path, tmp, sizeof tmp);
        if (t < 0)
            return -1;
        int rc = link(tmp, path), e = errno;
        unlink(tmp);
        if (rc == 0)
            return t;
        close(t);
        errno = e == EEXIST ? ESTALE : e;
        return -1;
    }
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (e == EWOULDBLOCK)
            *holder = read_pid(fd);
        close(fd);
        errno = e;
        return -1;
    }
    /* locked: its daemon is gone, unless the file was replaced after we
     * opened it (the lock is then on a name nobody sees) */
    if (!same_file(fd, path)) {
        close(fd);
        errno = ESTALE;
        return -1;
    }
    *stale = read_pid(fd);
    int t = make_tmp(path, tmp, sizeof tmp);
    if (t < 0 || rename(tmp, path) < 0) {
        int e = errno;
        if (t >= 0) {
            close(t);
            unlink(tmp);
        }
        close(fd);
        errno = e;
        return -1;
    }
    close(fd); /* held until the new file was in place */
    return t;
}

pidfile *pidfile_create(const char *path, pid_t *stale, char *err, size_t errlen)
{
    *stale = 0;
    pidfile *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path))) {
        free(p);
        snprintf(err, errlen, "%s", strerror(ENOMEM));
        return NULL;
    }
    for (int i = 0; i < PIDFILE_TRIES; i++) {
        pid_t holder = 0;
        errno = 0;
        p->fd = try_take(path, &holder, stale);
        if (p->fd >= 0)
            return p;
        if (errno == EWOULDBLOCK) {
            if (holder)
                snprintf(err, errlen, "held by pid %ld (another loomd runs with this pid file)",
                         (long)holder);
            else
                snprintf(err, errlen, "held by another process (its pid is not in the file yet)");
            goto fail;
        }
        if (errno != ESTALE) {
            snprintf(err, errlen, "%s", strerror(errno));
            goto fail;
        }
    }
    snprintf(err, errlen, "it kept changing while being taken (another loomd starting?)");
fail:
    free(p->path);
    free(p);
    return NULL;
}

void pidfile_remove(pidfile *p)
{
    if (!p)
        return;
    /* under our lock: nobody replaces it meanwhile */
    if (same_file(p->fd, p->path))
        unlink(p->path);
    close(p->fd);
    free(p->path);
    free(p);
}
