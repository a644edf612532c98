/* pidfile.h -- loomd's pid file (pid_file in the config).
 *
 * The file holds the daemon's pid and a line feed, and the daemon holds an
 * flock on it for as long as it runs: the lock, not the file's existence,
 * says a daemon is alive. So a second loomd given the same file refuses to
 * start and names the pid that holds it, while a file left behind by a
 * daemon that was killed (nobody holds its lock) is simply replaced.
 *
 * The content appears at once (written to a temporary file beside it, then
 * linked or renamed into place), so a reader never sees an empty or partial
 * pid. Only the holder of the lock on the file at the path ever replaces it,
 * which is what keeps two daemons starting at the same moment from both
 * believing they own it.
 *
 * Threads: not thread-safe; loomd creates and removes it on its main thread. */
#ifndef LOOM_DAEMON_PIDFILE_H
#define LOOM_DAEMON_PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct pidfile pidfile;

/* Writes this process's pid to PATH (copied) and locks it. Returns the new
 * handle (free it with pidfile_remove), or NULL with the reason in ERR
 * (ERRLEN bytes): "held by pid N" when another process holds the lock, else
 * what failed with its errno text. *STALE is the pid a replaced stale file
 * named (0: none was there, or it named none). */
pidfile *pidfile_create(const char *path, pid_t *stale, char *err, size_t errlen);

/* Removes the file when it is still the one P wrote (nobody deleted or
 * replaced it), releases the lock and frees P. NULL is a no-op. */
void pidfile_remove(pidfile *p);

#endif
