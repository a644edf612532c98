/* store_faults_env.h -- a test hook: a running loomd's store made to fail
 * and heal from outside, through the store's fault VFS.
 *
 * Tests only (docs/operations.md, "Test hooks"). When loomd starts with
 * LOOM_TEST_STORE_FAULTS=FILE in its environment, its store is opened with a
 * fault schedule (store_faults_t) and a timer looks at FILE every 50 ms;
 * whenever FILE changed (inode, size or mtime), its lines are applied in
 * order:
 *
 *   fail write N full|ioerr|readonly   from the Nth write on, every write fails
 *   fail sync N full|ioerr|readonly    the same for syncs
 *   heal                               no more faults
 *
 * Blank lines and lines starting with '#' are skipped. Each applied line is
 * logged ("test hook: store faults ..."), so a test can wait for it. Without
 * the variable nothing of this exists: no schedule, no timer, no cost. */
#ifndef LOOM_DAEMON_STORE_FAULTS_ENV_H
#define LOOM_DAEMON_STORE_FAULTS_ENV_H

#include "daemon/core/log.h"
#include "daemon/core/reactor.h"
#include "daemon/store/store.h"

typedef struct faults_env faults_env;

/* Reads LOOM_TEST_STORE_FAULTS. Unset or empty: *OUT = NULL and OPTIONS is
 * untouched. Set: *OUT is a new hook (faults_env_free) whose schedule is put
 * in OPTIONS->faults; R and LOG are borrowed and must outlive it. 0, or -1
 * (out of memory, logged). */
int faults_env_new(reactor_t *r, const log_sink *log, store_options_t *options, faults_env **out);

/* Starts watching the file, once the store is open: the store's own start
 * (schema, recovery) never meets a fault, so a restart in the middle of a
 * test's fault window starts and then fails as the file says. FE may be
 * NULL. 0, or -1 (out of memory, logged). */
int faults_env_start(faults_env *fe);

/* Stops the timer and frees FE and its schedule: after store_close, before
 * the reactor is freed. NULL is a no-op. */
void faults_env_free(faults_env *fe);

#endif
