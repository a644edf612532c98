/* fake_tools.h -- the fake provider's tool calls and structured outputs.
 *
 * A chat (/v1/chat/completions) or messages (/v1/messages) request that
 * offers tools, asks for a structured output or carries a script is
 * answered here instead of by the echo, in the API's own shape:
 *
 * - A script: the text "fake-script:" followed by a JSON array, in any
 *   message's text (or the Anthropic system prompt). Element N is the
 *   answer to model turn N, N being the number of assistant turns with
 *   tool calls already in the conversation:
 *     {"calls": [{"name": N, "arguments": {...}}, ...], "text": "..."}
 *         calls those tools (several per answer); "arguments_text": "..."
 *         instead of "arguments" sends that text as the arguments, bad
 *         JSON included (Anthropic: as the input, a string)
 *     {"answer": VALUE}        answers VALUE: a string as the text, any
 *                              other JSON as its text (a structured output)
 *     {"answer_text": "..."}   answers that text, even where JSON is due
 * - Past the script, or without one: a structured output (OpenAI
 *   response_format json_schema; Anthropic a tool_choice naming a tool,
 *   or "any", which answers through the last tool) is an instance of the
 *   schema made up from it (strings say the echo); after tool results the
 *   answer is their contents joined by newlines; otherwise the echo.
 *
 * The conversation is checked as the real APIs check it: every tool call
 * of an assistant turn must have its result right after it, and every
 * result must answer a call; tool definitions must have their API's shape.
 * A request that breaks that is refused (400 invalid_request_error). */
#ifndef LOOM_TESTS_FAKE_TOOLS_H
#define LOOM_TESTS_FAKE_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct fake_reply {
    /* OpenAI: choices[0].message; Anthropic: the content array (owned) */
    json_t *message;
    const char *finish;     /* finish_reason / stop_reason (static) */
    char *text;             /* the answer as text, for tokens and the log (owned) */
    int ncalls;             /* tool calls in the answer */
    int nfailed;            /* results of the last turn said to have failed: Anthropic's
                               is_error, an OpenAI tool message starting "error" */
    bool structured;        /* the answer is a structured output */
    bool whole;             /* never streamed: tool calls, or Anthropic's tool input */
    char error[256];        /* why the request is refused, when it is */
} fake_reply;

/* Answers REQ (borrowed; ANTHROPIC: a messages request, else a chat
 * completion) into *R (zeroed by the caller), ECHO (ECHO_LEN bytes) being
 * the echo the request would get. 1 when *R holds the answer, 0 when the
 * echo answers (no tools, no structured output, no script), -1 when the
 * request is refused (R->error says why) or memory ran out (R->error ""). */
int fake_tools_reply(bool anthropic, json_t *req, const char *echo, size_t echo_len,
                     fake_reply *r);

/* Frees what R owns. */
void fake_reply_free(fake_reply *r);

#endif
