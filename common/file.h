/* file.h -- reading a whole file into memory, for the programs and tests
 * that hand text to the compiler (which does no I/O of its own).
 *
 * Owns: nothing past the buffer it returns.
 * May call: libc only.
 * Must never call: anything of Loom's. Threads: none; safe to call from any
 * thread. */
#ifndef LOOM_COMMON_FILE_H
#define LOOM_COMMON_FILE_H

#include <stddef.h>

/* Reads all of PATH into a new buffer with a NUL after the last byte (the
 * caller frees it), storing the length in *LEN. Returns NULL with errno set
 * on failure; EFBIG when the file holds more than MAX bytes. PATH may be a
 * pipe or a terminal ("/dev/stdin"): it is read to its end, not stat'ed. */
char *file_read_all(const char *path, size_t max, size_t *len);

#endif
