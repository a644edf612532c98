/* test_iso_frame.c -- the frames between loomd and a plugin helper
 * (daemon/isolate/iso_frame.c): lengths cut anywhere, many frames in one
 * read, frames larger than a socket buffer through a non-blocking
 * socketpair, and the refusals (a header past the limit, a NaN). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/isolate/iso.h"

Test(iso_frame, frames_survive_any_cut)
{
    iso_writer w = { 0 };
    const char *msgs[] = { "{}", "", "{\"id\":1,\"output\":\"caf\\u00e9\"}", "x" };
    for (int i = 0; i < 4; i++)
        cr_assert(eq(int, iso_writer_add(&w, msgs[i], strlen(msgs[i])), 0));
    json_t *v = json_pack("{s:I, s:s}", "id", (json_int_t)7, "lambda", "p.f");
    cr_assert(eq(int, iso_writer_add_json(&w, v), 0));
    json_decref(v);
    size_t total = iso_writer_pending(&w);
    /* byte by byte, then in one piece */
    for (int pass = 0; pass < 2; pass++) {
        iso_reader r = { 0 };
        int got = 0;
        for (size_t off = 0; off < total;) {
            size_t step = pass == 0 ? 1 : total;
            cr_assert(eq(int, iso_reader_feed(&r, w.buf + w.off + off, step), 0));
            off += step;
            const char *data;
            size_t len;
            int rc;
            while ((rc = iso_reader_next(&r, &data, &len)) == 1) {
                if (got < 4) {
                    cr_assert(eq(sz, len, strlen(msgs[got])));
                    cr_assert(memcmp(data, msgs[got], len) == 0);
                } else {
                    json_t *back = json_loadb(data, len, 0, NULL);
                    cr_assert(back != NULL);
                    cr_assert(eq(int, (int)json_integer_value(json_object_get(back, "id")), 7));
                    json_decref(back);
                }
                got++;
            }
            cr_assert(eq(int, rc, 0));
        }
        cr_assert(eq(int, got, 5));
        iso_reader_free(&r);
    }
    iso_writer_free(&w);
}

Test(iso_frame, a_header_past_the_limit_is_refused)
{
    iso_reader r = { 0 };
    unsigned char h[4] = { 0xff, 0xff, 0xff, 0x7f };
    cr_assert(eq(int, iso_reader_feed(&r, h, 4), 0));
    const char *data;
    size_t len;
    cr_assert(eq(int, iso_reader_next(&r, &data, &len), -EMSGSIZE));
    iso_reader_free(&r);
}

Test(iso_frame, a_nan_cannot_be_sent)
{
    iso_writer w = { 0 };
    json_t *v = json_pack("{s:f}", "x", 1.0);
    json_real_set(json_object_get(v, "x"), NAN); /* json_real refuses it; set does not check */
    int rc = iso_writer_add_json(&w, v);
    json_decref(v);
    if (rc == 0) /* a jansson that writes it anyway: then it must be a whole frame */
        cr_assert(iso_writer_pending(&w) > 4);
    else
        cr_assert(eq(int, rc, -EINVAL));
    cr_assert(eq(int, iso_writer_add(&w, "{}", 2), 0)); /* the writer still works */
    iso_writer_free(&w);
}

/* A frame of several MiB through a non-blocking socketpair: the writer stops
 * when the socket is full and resumes where it stopped, the reader gets the
 * bytes unchanged. */
Test(iso_frame, large_frames_through_a_socket)
{
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    size_t big = (size_t)5 << 20;
    char *text = malloc(big + 1);
    cr_assert(text != NULL);
    for (size_t i = 0; i < big; i++)
        text[i] = (char)('a' + i % 26);
    text[big] = '\0';
    json_t *v = json_pack("{s:i, s:s}", "id", 1, "output", text);
    iso_writer w = { 0 };
    cr_assert(eq(int, iso_writer_add_json(&w, v), 0));
    cr_assert(eq(int, iso_writer_add(&w, "tail", 4), 0));
    iso_reader r = { 0 };
    int frames = 0, blocked = 0;
    while (frames < 2) {
        int rc = iso_writer_flush(&w, sv[0]);
        cr_assert(rc >= 0);
        blocked += rc == 1;
        ssize_t n = iso_reader_fill(&r, sv[1]);
        cr_assert(n > 0 || n == -EAGAIN, "read: %zd", n);
        const char *data;
        size_t len;
        while (iso_reader_next(&r, &data, &len) == 1) {
            if (frames == 0) {
                json_t *back = json_loadb(data, len, 0, NULL);
                cr_assert(back != NULL);
                cr_assert(json_equal(back, v));
                json_decref(back);
            } else {
                cr_assert(eq(sz, len, 4));
                cr_assert(memcmp(data, "tail", 4) == 0);
            }
            frames++;
        }
    }
    cr_assert(blocked > 0, "a 5 MiB frame should not fit in one socket buffer");
    json_decref(v);
    free(text);
    iso_writer_free(&w);
    iso_reader_free(&r);
    close(sv[0]);
    close(sv[1]);
}

Test(iso_frame, an_invoke_request_survives_the_frame)
{
    json_t *messages = json_pack("[{s:s, s:s}]", "role", "user", "content", "h\xc3\xa9llo");
    json_t *params = json_pack("{s:f, s:i}", "temperature", 0.5, "max_tokens", 64);
    loom_request req = { .kind = LOOM_CALL_CHAT, .model = "m1", .messages = messages,
                         .params = params, .json_mode = 1 };
    json_t *v = iso_request_to_json(&req);
    cr_assert(v != NULL);
    /* through the bytes of a frame, as the helper gets it */
    iso_writer w = { 0 };
    iso_reader r = { 0 };
    cr_assert_eq(iso_writer_add_json(&w, v), 0);
    cr_assert_eq(iso_reader_feed(&r, w.buf + w.off, iso_writer_pending(&w)), 0);
    const char *data;
    size_t len;
    cr_assert_eq(iso_reader_next(&r, &data, &len), 1);
    json_t *back = json_loadb(data, len, 0, NULL);
    cr_assert(back != NULL);
    loom_request got;
    cr_assert_eq(iso_request_from_json(back, &got), 0);
    cr_assert_eq(got.kind, LOOM_CALL_CHAT);
    cr_assert_str_eq(got.model, "m1");
    cr_assert(json_equal(got.messages, messages));
    cr_assert(json_equal(got.params, params));
    cr_assert_eq(got.json_mode, 1);
    cr_assert_null(got.inputs);
    json_decref(back);
    json_decref(v);
    /* an embedding batch, no model */
    json_t *inputs = json_pack("[s, s]", "a", "b");
    loom_request emb = { .kind = LOOM_CALL_EMBED, .inputs = inputs };
    v = iso_request_to_json(&emb);
    cr_assert_eq(iso_request_from_json(v, &got), 0);
    cr_assert_eq(got.kind, LOOM_CALL_EMBED);
    cr_assert_null(got.model);
    cr_assert(json_equal(got.inputs, inputs));
    cr_assert_eq(got.json_mode, 0);
    json_decref(v);
    /* what is not a request */
    json_t *junk = json_pack("{s:i}", "kind", 3);
    cr_assert_eq(iso_request_from_json(junk, &got), -1);
    json_decref(junk);
    json_decref(inputs);
    json_decref(messages);
    json_decref(params);
    iso_writer_free(&w);
    iso_reader_free(&r);
}

/* ABI 2.3: the tools, a tool conversation and a schema reach the helper. */
Test(iso_frame, tools_and_schema_survive_the_frame)
{
    json_t *messages = json_loads(
        "[{\"role\": \"user\", \"content\": \"go\"},"
        " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\":"
        "   [{\"id\": \"c1\", \"name\": \"t\", \"arguments\": {\"x\": 1}}]},"
        " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"name\": \"t\", \"content\": \"r\","
        "  \"is_error\": false}]", 0, NULL);
    json_t *tools = json_loads("[{\"name\": \"t\", \"description\": \"d\", \"parameters\":"
                               " {\"type\": \"object\"}}]", 0, NULL);
    json_t *schema = json_loads("{\"type\": \"object\"}", 0, NULL);
    cr_assert(messages && tools && schema);
    loom_request req = { .kind = LOOM_CALL_CHAT, .messages = messages, .tools = tools,
                         .schema = schema, .schema_name = "answer" };
    json_t *v = iso_request_to_json(&req);
    cr_assert(v != NULL);
    char *text = json_dumps(v, JSON_COMPACT);
    json_t *back = json_loads(text, 0, NULL);
    loom_request got;
    cr_assert_eq(iso_request_from_json(back, &got), 0);
    cr_assert(json_equal(got.messages, messages));
    cr_assert(json_equal(got.tools, tools));
    cr_assert(json_equal(got.schema, schema));
    cr_assert_str_eq(got.schema_name, "answer");
    json_decref(back);
    free(text);
    json_decref(v);
    /* without them, none */
    loom_request plain = { .kind = LOOM_CALL_CHAT, .messages = messages };
    v = iso_request_to_json(&plain);
    cr_assert_eq(iso_request_from_json(v, &got), 0);
    cr_assert_null(got.tools);
    cr_assert_null(got.schema);
    cr_assert_null(got.schema_name);
    json_decref(v);
    json_decref(messages);
    json_decref(tools);
    json_decref(schema);
}
