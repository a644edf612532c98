/* metrics_addr.c -- the endpoint's listen address, "HOST:PORT".
 *
 * Apart from metrics_http.c because the config file's parser checks the
 * address too, and it is linked into loomctl, which needs no HTTP server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics/metrics_http.h"

int metrics_http_parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                              char *err, size_t errlen)
{
    char host[64];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || colon == listen) {
        snprintf(err, errlen, "expected \"HOST:PORT\" (e.g. \"127.0.0.1:9464\")");
        return -1;
    }
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (listen[0] == '[') {
        if (hl < 3 || listen[hl - 1] != ']') {
            snprintf(err, errlen, "an IPv6 address goes in brackets: \"[::1]:9464\"");
            return -1;
        }
        h++;
        hl -= 2;
    }
    if (hl >= sizeof host) {
        snprintf(err, errlen, "host too long");
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port > 65535 || colon[1] == '-' || colon[1] == '+') {
        snprintf(err, errlen, "port '%s' is not a number from 0 to 65535", colon + 1);
        return -1;
    }
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "localhost") == 0 && listen[0] != '[')
        snprintf(host, sizeof host, "127.0.0.1");
    if (listen[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 0;
    }
    if (listen[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    if (listen[0] != '[' && strchr(host, ':'))
        snprintf(err, errlen, "an IPv6 address goes in brackets: \"[%s]:%lu\"", host, port);
    else
        snprintf(err, errlen, "'%s' is not an IP address (names other than localhost are not "
                              "looked up)", host);
    return -1;
}
