/* fake_multipart.h -- finding a field of a multipart/form-data body.
 *
 * OpenAI's file upload (POST /v1/files) is a form with a `purpose` field
 * and a `file` field that carries a filename. The fake server only needs
 * to find a field by name, so this reads the body in place: nothing is
 * copied, and a body of megabytes is scanned once per field. */
#ifndef LOOM_TESTS_FAKE_MULTIPART_H
#define LOOM_TESTS_FAKE_MULTIPART_H

#include <stddef.h>

/* One field of a form. Every pointer is borrowed from the body given to
 * fake_multipart_find (filename is NULL when the part has none); none of
 * them ends in NUL. */
typedef struct fake_part {
    const char *filename;
    size_t filename_len;
    const char *data;
    size_t len;
} fake_part;

/* Finds the field NAME in BODY (LEN bytes), a form whose Content-Type
 * header value is CTYPE (CTYPE_LEN bytes, with its boundary parameter).
 * 1 when found (into *OUT), 0 when the form has no such field, -1 when
 * CTYPE is not multipart/form-data with a boundary or the body does not
 * follow it. */
int fake_multipart_find(const char *ctype, size_t ctype_len, const char *body, size_t len, const char *name,
                        fake_part *out);

#endif
