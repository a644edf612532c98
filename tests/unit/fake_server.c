/* fake_server.c -- the fake provider server as a child process of a test. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/fake_server.h"

int fake_server_start(fake_server *s, const char *const *args)
{
    const char *bd = getenv("LOOM_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fake/fake_provider", bd ? bd : ".");
    const char *argv[40] = { path, "--port", "0", "--max-seconds", "600" };
    int n = 5, p[2];
    for (int i = 0; args && args[i] && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    s->pid = 0;
    s->port = 0;
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    char line[32] = { 0 };
    size_t got = 0;
    /* the port line comes first and is flushed at once */
    for (int i = 0; i < 100 && got < sizeof line - 1 && !memchr(line, '\n', got); i++) {
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = read(p[0], line + got, sizeof line - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(p[0]);
    s->pid = pid;
    s->port = atoi(line);
    if (s->port <= 0) {
        fprintf(stderr, "fake_server: %s printed no port\n", path);
        fake_server_stop(s);
        return -1;
    }
    return 0;
}

void fake_server_stop(fake_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int st;
    waitpid(s->pid, &st, 0);
    s->pid = 0;
}

json_t *fake_server_stats(const fake_server *s, int reset)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char buf[8192];
    size_t got = 0;
    json_t *j = NULL;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        goto out;
    int n = snprintf(buf, sizeof buf, "%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n", reset ? "POST /reset" : "GET /stats");
    if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
        goto out;
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 5000) <= 0)
            break;
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
        char *body = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "content-length:");
        if (body && cl && (size_t)(buf + got - (body + 4)) >= (size_t)atol(cl + 15)) {
            j = json_loads(body + 4, JSON_DISABLE_EOF_CHECK, NULL);
            break;
        }
    }
out:
    close(fd);
    return j;
}

long fake_server_stat(const fake_server *s, const char *name)
{
    json_t *j = fake_server_stats(s, 0);
    json_t *v = j ? json_object_get(j, name) : NULL;
    long r = json_is_integer(v) ? (long)json_integer_value(v) : -1;
    json_decref(j);
    return r;
}

const char *fake_server_base_url(const fake_server *s, char *buf, size_t len)
{
    snprintf(buf, len, "http://127.0.0.1:%d/v1", s->port);
    return buf;
}
