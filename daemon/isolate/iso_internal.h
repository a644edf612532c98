/* iso_internal.h -- what iso.c (calls, helpers' life on the reactor) and
 * iso_spawn.c (starting, killing and reaping helper processes) share. Not a
 * public header: nothing outside daemon/isolate includes it. */
#ifndef LOOM_DAEMON_ISO_INTERNAL_H
#define LOOM_DAEMON_ISO_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/containers.h"
#include "daemon/core/reactor.h"
#include "daemon/isolate/iso.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 10000
#define HEALTHY_US (60 * REACTOR_SEC)
#define REAP_POLL_US (5 * REACTOR_MSEC)
#define HELPER_FD 3

typedef struct iso_plugin iso_plugin;

enum hstate { H_DOWN, H_STARTING, H_READY, H_EXITING };

typedef struct helper {
    iso_t *iso;
    iso_plugin *pl;
    int index;
    enum hstate state;
    pid_t pid;                 /* 0: no process */
    int fd, pidfd;             /* -1: none */
    iso_reader rd;
    iso_writer wr;
    iso_call_t *call;          /* in flight, or NULL */
    list_link invokes;         /* iso_invoke_t in flight here */
    size_t ninvokes;
    reactor_timer_t *deadline; /* of the call in flight, or of the start */
    reactor_timer_t *restart;  /* waiting out the backoff */
    reactor_timer_t *reap_poll;
    const char *killed_for;    /* why loomd killed it ("timeout"), NULL: it died */
    uint64_t started_us;
    uint64_t backoff_ms;
    unsigned starts;
    bool was_ready;            /* this process said ready */
} helper;

struct iso_plugin {
    list_link link;
    char *name, *path;
    iso_limits lim;
    helper *h;                 /* lim.processes of them */
    list_link queue;           /* iso_call_t waiting for an idle helper */
    list_link invoke_queue;    /* iso_invoke_t waiting for a ready helper */
    list_link instances;       /* iso_instance_t */
    bool start_failed;         /* the last start died before it was ready */
    char why[256];             /* what the last failed start or crash said */
    json_t *config;            /* owned copy: every start's init frame; NULL: none */
    iso_stats st;              /* this plugin's counts (helpers_ready unused) */
};

struct iso_call {
    list_link link;            /* in the plugin's queue while waiting */
    iso_t *iso;
    iso_plugin *pl;
    helper *h;                 /* while in flight */
    uint64_t id;
    char *fn;                  /* owned */
    json_t *input, *args;      /* owned references */
    uint64_t deadline_ms;      /* the step's, CLOCK_MONOTONIC ms; 0: none */
    const char *given_up;      /* in flight but given up on ("timeout", "cancelled
                                  call"): done is gone, the helper has the grace */
    uint64_t given_up_us;      /* when (reactor time) */
    reactor_timer_t *later;    /* an answer given on a later pass */
    iso_status later_status;
    iso_done_fn done;
    void *ud;
};

struct iso_instance {
    list_link link;            /* in the plugin's instances */
    iso_t *iso;
    iso_plugin *pl;
    uint64_t id;
    char *provider, *name;     /* owned */
    json_t *config;            /* owned copy, or NULL */
};

struct iso_invoke {
    list_link link;            /* in the plugin's invoke_queue, or its helper's invokes */
    iso_instance_t *inst;
    helper *h;                 /* while in flight */
    uint64_t id;
    json_t *req;               /* owned: the encoded request */
    uint64_t deadline_ms;
    reactor_timer_t *timer;    /* the plugin's timeout, in flight; or an answer on a later pass */
    iso_invoke_done_fn done;
    void *ud;
};

struct iso {
    reactor_t *r;
    char *host;
    iso_log_fn log;
    void *log_ud;
    list_link plugins;
    uint64_t next_id;
};

#define LOG(iso, lvl, data, ...) ((iso)->log ? (iso)->log((iso)->log_ud, lvl, data, __VA_ARGS__) \
                                             : json_decref(data))

/* ---- iso.c */
/* Whether one of PL's helpers is ready. */
bool iso_any_ready(const iso_plugin *pl);
/* Fails every call queued for PL with plugin_crashed and PL's reason. */
void iso_fail_queue(iso_plugin *pl);
/* ---- iso_invoke, in iso.c too */
/* Sends every instance of H's plugin to H (after its init frame). */
void iso_send_instances(helper *h);
/* Hands queued invoke calls of PL to ready helpers. */
void iso_dispatch_invokes(iso_plugin *pl);
/* H died: fails its invoke calls with plugin_crashed (WHY says how). */
void iso_fail_invokes(helper *h, const char *how);
/* An invoke answer from H. */
void iso_on_invoke_answer(helper *h, json_t *msg);
/* Frees everything of PL's invoke calls and instances (iso_free). */
void iso_invokes_free(iso_plugin *pl);
/* H's process ended with STATUS (from waitpid): answers its call, logs,
 * schedules the restart. */
void iso_reaped(helper *h, int status);
/* Queues H's init frame (its plugin's configuration): the first thing a
 * started helper reads. */
void iso_send_init(helper *h);
/* Reactor callbacks of a helper's socket, its deadline and its restart. */
void iso_on_fd(reactor_t *r, int fd, int events, void *ud);
void iso_deadline_fired(reactor_t *r, reactor_timer_t *t, void *ud);
void iso_restart_fired(reactor_t *r, reactor_timer_t *t, void *ud);

/* ---- iso_spawn.c */
/* Starts H's process; failing to, H waits out a backoff as after a crash. */
void iso_spawn(helper *h);
/* Ends H's process (SIGKILL) and waits to reap it; WHY (static text), when
 * not NULL, says loomd did it on purpose (no backoff). */
void iso_helper_kill(helper *h, const char *why);
/* "killed by signal 11 (Segmentation fault)", "exited with status 3". */
void iso_describe_status(int status, char *buf, size_t len);

#endif
