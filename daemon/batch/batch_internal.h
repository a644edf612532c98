/* batch_internal.h -- the batch manager's structures, shared by batch.c
 * (the manager, the index of lines, start and drop), bmgr_collect.c (the
 * collectors: lines waiting for their batch's window) and bmgr_run.c (a
 * batch's way through the provider's steps).
 *
 * A batch lives in memory from its first line until its job(s) no longer
 * want its lines: OPEN while it collects, then WRITING (its record is being
 * committed), WRITTEN, UPLOADED, CREATED (polled), ENDING (results being
 * read and committed) and DONE (results on disk, read by lookup). Lines are
 * indexed by job and step key, and by job, so a lookup and a job's drop cost
 * no scan. */
#ifndef LOOM_DAEMON_BATCH_INTERNAL_H
#define LOOM_DAEMON_BATCH_INTERNAL_H

#include "common/containers.h"
#include "daemon/batch/batch.h"
#include "daemon/core/http.h"

/* ---- a small string-keyed hash table (chained), for the two indexes */

typedef struct bhnode {
    struct bhnode *next;
    uint64_t hash;
    const char *key;           /* borrowed from the entry that embeds the node */
} bhnode;

typedef struct bhash {
    bhnode **slots;
    size_t nslots, n;
} bhash;

uint64_t bhash_str(const char *s);
/* The node with KEY, or NULL. */
bhnode *bhash_get(const bhash *h, const char *key);
/* Adds N (KEY not there yet; N->key set by the caller). 0 or -ENOMEM. */
int bhash_put(bhash *h, bhnode *n);
void bhash_del(bhash *h, bhnode *n);
void bhash_free(bhash *h);

typedef enum bstate {
    B_OPEN,                    /* collecting lines (memory only) */
    B_WRITING,                 /* its record and lines being committed */
    B_WRITTEN,                 /* on disk; nothing sent yet (as far as we know) */
    B_UPLOADED,                /* the upload's id is on disk */
    B_CREATED,                 /* the provider's batch id is on disk: polling */
    B_ENDING,                  /* ended: results being read and committed */
    B_DONE                     /* every line's outcome on disk */
} bstate;

typedef struct batch batch;
typedef struct jobrec jobrec;

/* One line: a job step's call in a batch. */
typedef struct bline {
    bhnode by_step;            /* in m->lines, key STEPKEY ("JOB\x1fKEY") */
    list_link job_link;        /* in its jobrec's lines */
    jobrec *jr;
    batch *b;
    size_t idx;                /* in b->lines, the number in its custom_id */
    char custom_id[24];
    char *stepkey;             /* owned: JOB \x1f KEY */
    const char *job, *key;     /* into STEPKEY (split at the \x1f) */
    char *node;                /* owned, or NULL */
    int attempt;
    char *text;                /* owned: its JSONL until the batch is created */
    size_t len;
    bool done;                 /* its outcome is known ... */
    bool mem_outcome;          /* ... and only in memory (the store refused it): */
    loom_errcode code;
    char *message;             /* owned, or NULL */
} bline;

struct jobrec {
    bhnode node;               /* in m->jobs, key JOB */
    char *job;                 /* owned */
    list_link lines;           /* bline.job_link */
    uint64_t mark;             /* bmgr_first_of_job */
    char told[40];             /* the OPEN batch it was last told it collects in */
};

struct batch {
    batch_mgr_t *m;
    list_link link;            /* in m->batches */
    char name[40];             /* "loom-" + a store id */
    char *provider, *model;    /* owned */
    loom_call_kind kind;
    uint64_t deadline_ms;      /* the completion window asked for */
    bstate st;
    bline **lines;             /* by idx; NULL where a line was dropped */
    size_t nlines, cap;
    size_t live;               /* lines not dropped */
    size_t bytes;              /* JSONL bytes of the live lines (OPEN) */
    uint64_t flush_at_us;      /* OPEN: when its window ends (reactor clock) */
    reactor_timer_t *timer;    /* the window, the next poll, or a backoff */
    http_call_t *http;         /* the step in flight, or NULL */
    const http_client_t *http_client; /* ... the client it is on (a generation's) */
    loom_batch_step step;      /* ... which it is */
    const char *url;           /* ... RESULTS: the one read (results or errors) */
    int writes;                /* store writes in flight for it */
    bool dead;                 /* freed once WRITES drops to 0 */
    bool resumed;              /* loaded at start: look for what a crash left first */
    bool tried_find, tried_find_upload, no_upload;
    bool cancelling;           /* every line dropped: cancel, then delete */
    bool got_results, got_errors; /* ENDING: which files were read */
    loom_errcode fail_code;    /* "failed": what every line without a result gets */
    char file_id[128], remote_id[128];
    char results[512], errors[512];
    char remote_state[16];     /* "running", "ended", "expired", "cancelled", "failed" */
    char fail_msg[256];        /* FAILED: the provider's reason */
    int64_t done, total;       /* the provider's counts (-1: not said) */
    uint64_t poll_ms;          /* the wait before the next poll */
    uint64_t err_ms;           /* the wait before retrying a failed step (0: none yet) */
    char **outcomes;           /* ENDING: the result line of each idx, or NULL */
    size_t *outcome_len;
};

/* A store write's user data: the manager may be gone when it completes. */
typedef struct bwrite {
    list_link link;            /* in m->writes */
    batch_mgr_t *m;            /* NULL once the manager was freed */
    batch *b;
    int what;                  /* bmgr_run.c's */
} bwrite;

struct batch_mgr {
    reactor_t *r;
    store_t *st;
    const log_sink *log;
    batch_mgr_hooks hooks;
    list_link batches;
    list_link writes;          /* bwrite.link */
    bhash lines;               /* bline.by_step */
    bhash jobs;                /* jobrec.node */
    uint64_t mark;             /* bmgr_first_of_job's generation */
    reactor_post_t post;       /* start: ready() for lines already done */
    json_t *ready_jobs;        /* ... their jobs, until that post runs */
    uint64_t uploads, polls, errors, failed, creates, cancels;
};

/* batch.c */
/* JOB's record (the manager's), made when MAKE; NULL when there is none
 * (or out of memory). */
jobrec *bmgr_jobrec(batch_mgr_t *m, const char *job, bool make);
/* A new line of JOB's step KEY (strings copied), the caller's until
 * bmgr_line_attach takes it. NULL when out of memory. */
bline *bmgr_line_new(const char *job, const char *key, const char *node, int attempt);
/* Puts L into the indexes (replacing the step's earlier line, which is
 * dropped) and into B at IDX; the manager owns L from then on. 0, -EEXIST
 * (B has a line at IDX) or -ENOMEM (L is still the caller's). */
int bmgr_line_attach(batch_mgr_t *m, batch *b, bline *l, size_t idx);
/* Takes L out of the indexes and its batch, and frees it. */
void bmgr_line_drop(batch_mgr_t *m, bline *l);
/* A new batch for PROVIDER, MODEL, KIND, DEADLINE_MS (strings copied)
 * named NAME (NULL: a new name), in state ST, owned by the manager (in
 * m->batches). NULL when out of memory. */
batch *bmgr_new(batch_mgr_t *m, const char *name, const char *provider, const char *model,
                 loom_call_kind kind, uint64_t deadline_ms, bstate st);
/* Frees B (its remaining lines dropped), now or once its store writes end. */
void bmgr_free(batch *b);
/* Frees B's results read so far (ENDING). */
void bmgr_free_outcomes(batch *b);
/* Frees what is left of B, freed with store writes in flight: the last
 * write's end. */
void bmgr_release(batch *b);
/* Whether L is the first line of its job seen since m->mark was last
 * bumped (to tell each job once). */
bool bmgr_first_of_job(batch_mgr_t *m, bline *l);
/* Calls progress for every job holding lines of B. */
void bmgr_progress(batch *b, const char *state);
void bmgr_log(batch_mgr_t *m, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "chat" or "embed". */
const char *bmgr_kind_name(loom_call_kind k);

/* bmgr_collect.c */
/* Queues a line (batch_mgr_submit). */
int bmgr_collect(batch_mgr_t *m, const batch_line_spec *s, loom_errcode *code, char *err,
                  size_t errlen);
/* OPEN batch B's window ended or it is full: writes its record. */
void bmgr_flush(batch *b);

/* bmgr_run.c */
/* Takes B one step further from where it is (B not OPEN). */
void bmgr_run(batch *b);
/* B just lost its last line while nothing of it is in flight: stop it. */
void bmgr_abandon(batch *b);
/* Every line of B ends with CODE and MSG (kept in memory), and their jobs
 * are told. */
void bmgr_fail_lines(batch *b, loom_errcode code, const char *msg);
/* What a store write of a batch records (bwrite.what). */
enum { W_INSERT = 1, W_UPLOADED, W_CREATED, W_FINISH, W_DELETE };
/* A store write for B, its callback bmgr_write_done (WHAT). NULL when out
 * of memory. */
bwrite *bmgr_write_new(batch *b, int what);
/* W was never queued (the store refused it): forgets it. */
void bmgr_write_abort(bwrite *w);
/* store_done_cb of every batch write (UD: its bwrite). */
void bmgr_write_done(void *ud, const store_result_t *res);

#endif
