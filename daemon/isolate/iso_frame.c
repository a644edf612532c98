/* iso_frame.c -- the frames between loomd and a helper: a 4-byte
 * little-endian length, then that many bytes (iso.h says why a stream),
 * and the one structure both ends put in a frame field by field: an invoke
 * call's loom_request. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/isolate/iso.h"

#define READ_ROOM ((size_t)64 << 10)

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *b = realloc(*buf, n);
    if (!b)
        return -ENOMEM;
    *buf = b;
    *cap = n;
    return 0;
}

/* Moves unread bytes to the front once they are less than the dead space,
 * so a long-lived reader never grows from frames it already consumed. */
static void compact(char *buf, size_t *off, size_t *len)
{
    if (*off == 0)
        return;
    size_t live = *len - *off;
    if (live)
        memmove(buf, buf + *off, live);
    *off = 0;
    *len = live;
}

void iso_reader_free(iso_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}

ssize_t iso_reader_fill(iso_reader *r, int fd)
{
    compact(r->buf, &r->off, &r->len);
    if (grow(&r->buf, &r->cap, r->len + READ_ROOM) < 0)
        return -ENOMEM;
    ssize_t n;
    do
        n = read(fd, r->buf + r->len, r->cap - r->len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    r->len += (size_t)n;
    return n;
}

int iso_reader_feed(iso_reader *r, const void *data, size_t len)
{
    compact(r->buf, &r->off, &r->len);
    if (grow(&r->buf, &r->cap, r->len + len) < 0)
        return -ENOMEM;
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return 0;
}

int iso_reader_next(iso_reader *r, const char **data, size_t *len)
{
    size_t have = r->len - r->off;
    if (have < ISO_FRAME_HEADER)
        return 0;
    const unsigned char *h = (const unsigned char *)r->buf + r->off;
    size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    if (n > ISO_FRAME_MAX)
        return -EMSGSIZE;
    if (have - ISO_FRAME_HEADER < n) {
        /* room for the whole frame now, so the next fills need not grow */
        if (grow(&r->buf, &r->cap, r->off + ISO_FRAME_HEADER + n) < 0)
            return -ENOMEM;
        return 0;
    }
    *data = r->buf + r->off + ISO_FRAME_HEADER;
    *len = n;
    r->off += ISO_FRAME_HEADER + n;
    return 1;
}

void iso_writer_free(iso_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

int iso_writer_add(iso_writer *w, const void *data, size_t len)
{
    if (len > ISO_FRAME_MAX)
        return -EMSGSIZE;
    compact(w->buf, &w->off, &w->len);
    if (grow(&w->buf, &w->cap, w->len + ISO_FRAME_HEADER + len) < 0)
        return -ENOMEM;
    unsigned char *h = (unsigned char *)w->buf + w->len;
    h[0] = (unsigned char)len;
    h[1] = (unsigned char)(len >> 8);
    h[2] = (unsigned char)(len >> 16);
    h[3] = (unsigned char)(len >> 24);
    memcpy(w->buf + w->len + ISO_FRAME_HEADER, data, len);
    w->len += ISO_FRAME_HEADER + len;
    return 0;
}

/* json_dumpb's callback form: encodes straight into the writer's buffer,
 * after a header patched once the length is known. */
struct dump_to {
    iso_writer *w;
    bool nomem;
};

static int dump_cb(const char *buf, size_t size, void *ud)
{
    struct dump_to *to = ud;
    iso_writer *w = to->w;
    if (grow(&w->buf, &w->cap, w->len + size) < 0) {
        to->nomem = true;
        return -1;
    }
    memcpy(w->buf + w->len, buf, size);
    w->len += size;
    return 0;
}

int iso_writer_add_json(iso_writer *w, const json_t *v)
{
    compact(w->buf, &w->off, &w->len);
    if (grow(&w->buf, &w->cap, w->len + ISO_FRAME_HEADER) < 0)
        return -ENOMEM;
    size_t start = w->len;
    w->len += ISO_FRAME_HEADER;
    struct dump_to to = { w, false };
    if (json_dump_callback(v, dump_cb, &to, JSON_COMPACT | JSON_ENCODE_ANY) < 0) {
        w->len = start;
        return to.nomem ? -ENOMEM : -EINVAL;
    }
    size_t n = w->len - start - ISO_FRAME_HEADER;
    if (n > ISO_FRAME_MAX) {
        w->len = start;
        return -EMSGSIZE;
    }
    unsigned char *h = (unsigned char *)w->buf + start;
    h[0] = (unsigned char)n;
    h[1] = (unsigned char)(n >> 8);
    h[2] = (unsigned char)(n >> 16);
    h[3] = (unsigned char)(n >> 24);
    return 0;
}

int iso_writer_flush(iso_writer *w, int fd)
{
    while (w->off < w->len) {
        ssize_t n = write(fd, w->buf + w->off, w->len - w->off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -errno;
        }
        w->off += (size_t)n;
    }
    w->off = w->len = 0;
    /* a writer that once held a huge frame gives the memory back */
    if (w->cap > ((size_t)1 << 20)) {
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
    return 0;
}

/* ---- an invoke call's request */

json_t *iso_request_to_json(const loom_request *req)
{
    json_t *o = json_pack("{s:s, s:b, s:b}", "kind",
                          req->kind == LOOM_CALL_EMBED ? "embed" : "chat", "json_mode",
                          req->json_mode != 0, "prompt_cache", req->prompt_cache != 0);
    if (!o)
        return NULL;
    if ((req->model && json_object_set_new(o, "model", json_string(req->model)) < 0) ||
        (req->messages && json_object_set(o, "messages", req->messages) < 0) ||
        (req->params && json_object_set(o, "params", req->params) < 0) ||
        (req->inputs && json_object_set(o, "inputs", req->inputs) < 0) ||
        (req->tools && json_object_set(o, "tools", req->tools) < 0) ||
        (req->schema && json_object_set(o, "schema", req->schema) < 0) ||
        (req->schema && req->schema_name &&
         json_object_set_new(o, "schema_name", json_string(req->schema_name)) < 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int iso_request_from_json(json_t *v, loom_request *out)
{
    const char *kind = json_string_value(json_object_get(v, "kind"));
    if (!kind)
        return -1;
    memset(out, 0, sizeof *out);
    out->kind = strcmp(kind, "embed") == 0 ? LOOM_CALL_EMBED : LOOM_CALL_CHAT;
    out->model = json_string_value(json_object_get(v, "model"));
    out->messages = json_object_get(v, "messages");
    out->params = json_object_get(v, "params");
    out->json_mode = json_is_true(json_object_get(v, "json_mode"));
    out->prompt_cache = json_is_true(json_object_get(v, "prompt_cache"));
    out->inputs = json_object_get(v, "inputs");
    out->tools = json_object_get(v, "tools");
    out->schema = json_object_get(v, "schema");
    out->schema_name = json_string_value(json_object_get(v, "schema_name"));
    if (out->schema && !out->schema_name)
        out->schema_name = "output";
    return 0;
}
