/* log_file.c -- the log in a file (log.file), reopened for rotation.
 *
 * The sink always writes to stderr; a log file is put there with dup3, at
 * start and at each reopen. So the sink's descriptor number never changes
 * under the threads that log, and what other code writes to stderr (a
 * plugin's fprintf, libc's abort message, an isolated plugin's helper, which
 * inherits stderr) lands in the same file instead of on a terminal.
 *
 * How the file is opened, and why:
 * - O_APPEND: every line lands at the end, whoever else writes to the file
 *   (helpers, logrotate's copytruncate), and one write(2) per line keeps
 *   lines whole.
 * - O_CLOEXEC: the descriptor open() returns lives until it is put on
 *   stderr; a reopen happens while other threads may start processes (a
 *   helper restarting), which must not inherit a stray descriptor of the
 *   log: it would keep a rotated file, and its disk space, for as long as
 *   they live.
 * - mode 0640: the log names jobs, workflows and steps, and with
 *   log.payloads it holds prompts and answers: not for every user of the
 *   machine. The group may read it (an operator's group such as adm, as
 *   logrotate setups expect), nobody else.
 *
 * Rotation: the file is renamed away and loomd gets SIGHUP; the reopen makes
 * a new file at the configured path and swaps it in. Helpers started before
 * keep the old file as their stderr until they restart. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "daemon/core/log.h"

int log_file_open(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
}

int log_file_use(int fd, bool stdout_too)
{
    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    int rc = 0, e = 0;
    if (fd != 2 && dup3(fd, 2, 0) < 0) {
        e = errno;
        rc = -1;
    }
    if (fd != 2)
        close(fd);
    if (rc == 0 && stdout_too) {
        int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (nul >= 0 && nul != 1) {
            dup3(nul, 1, 0);
            close(nul);
        }
    }
    errno = e;
    return rc;
}
