/* A closed-loop HTTP/1.1 client in C for bench.stress's overload scenario.
 *
 *   closedloop_client PORT CONNECTIONS SECONDS HONOUR JITTER SEED < requests
 *
 * stdin holds the requests to cycle through, each as a decimal length, a newline and that
 * many bytes. CONNECTIONS connections to 127.0.0.1:PORT each send a request, read the whole
 * answer (Content-Length), and send the next one: on the same connection, or on a new one
 * when the answer said "Connection: close". With HONOUR 1, a client refused with a 503 and
 * Retry-After waits that many seconds, lengthened by a random 0 to JITTER share, before it
 * asks again. One thread and epoll, so that the client costs little of the cores it shares
 * with the server.
 *
 * Prints one line per answer: "STATUS SENT_S LATENCY_MS RETRY_AFTER", SENT_S counted from
 * the start, RETRY_AFTER -1 when the answer had none; STATUS 0 is a connection error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

typedef struct {
    int fd;
    int index;
    size_t sent;       /* bytes of the current request written */
    char head[HEAD_MAX];
    size_t head_len;   /* bytes of the head read so far (until \r\n\r\n) */
    long body_left;    /* -1 while reading the head */
    int status, keep;
    double retry_after;
    double started;    /* when the current request began (connect included) */
    double wake;       /* when a waiting client asks again; 0 when not waiting */
    unsigned long n;   /* which request to send next */
} conn_t;

static int epfd, port;
static double t0;

static void start(conn_t *c) {
    c->started = now();
    c->sent = 0;
    c->head_len = 0;
    c->body_left = -1;
    c->status = 0;
    c->keep = 1;
    c->retry_after = -1;
    c->wake = 0;
    if (c->fd < 0) {
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
            close(c->fd);
            c->fd = -1;
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    } else {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void drop(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* The answer is complete (status 0: the connection failed): record it, then go on. */
static void finish(conn_t *c, int honour, double jitter) {
    double t = now();
    printf("%d %.6f %.3f %.3f\n", c->status, c->started - t0, (t - c->started) * 1000,
           c->retry_after);
    c->n++;
    if (!c->keep || c->status == 0) drop(c);
    if (honour && c->status == 503 && c->retry_after > 0) {
        if (c->fd >= 0) {
            struct epoll_event ev = {.events = 0, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
        c->wake = t + c->retry_after * (1 + jitter * drand48());
        return;
    }
    start(c);
}

static void parse_head(conn_t *c) {
    c->head[c->head_len] = 0;
    sscanf(c->head, "HTTP/1.%*d %d", &c->status);
    long length = 0;
    for (char *line = strstr(c->head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (!strncasecmp(h, "content-length:", 15)) length = strtol(h + 15, NULL, 10);
        else if (!strncasecmp(h, "connection:", 11)) {
            const char *v = h + 11;
            while (*v == ' ') v++;
            c->keep = strncasecmp(v, "close", 5) != 0;
        }
        else if (!strncasecmp(h, "retry-after:", 12)) c->retry_after = strtod(h + 12, NULL);
    }
    c->body_left = length;
}

static void on_event(conn_t *c, unsigned events, int honour, double jitter) {
    if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
        c->status = 0;
        finish(c, honour, jitter);
        return;
    }
    request_t *r = &requests[c->n % request_count];
    if ((events & EPOLLOUT) && c->sent < r->len && send_rest(epfd, c->fd, c, r, &c->sent) < 0) {
        c->status = 0;
        finish(c, honour, jitter);
        return;
    }
    if (!(events & EPOLLIN)) return;
    for (;;) {
        char body[65536];
        ssize_t got;
        if (c->body_left < 0) {
            got = recv(c->fd, c->head + c->head_len, HEAD_MAX - 1 - c->head_len, 0);
        } else {
            got = recv(c->fd, body, c->body_left < (long)sizeof body ? c->body_left : (long)sizeof body, 0);
        }
        if (got < 0 && errno == EAGAIN) return;
        if (got <= 0) { /* closed (or failed) before the answer was whole */
            c->status = 0;
            finish(c, honour, jitter);
            return;
        }
        if (c->body_left < 0) {
            long head_size = head_end(c->head, &c->head_len, got);
            if (head_size < 0) {
                c->status = 0;
                finish(c, honour, jitter);
                return;
            }
            if (head_size == 0) continue;
            size_t extra = c->head_len - head_size;
            c->head_len = head_size;
            parse_head(c);
            c->body_left -= extra;
        } else {
            c->body_left -= got;
        }
        if (c->body_left <= 0) {
            finish(c, honour, jitter);
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s PORT CONNECTIONS SECONDS HONOUR JITTER SEED < requests\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    int count = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int honour = atoi(argv[4]);
    double jitter = atof(argv[5]);
    srand48(atol(argv[6]));
    read_requests();
    static char out[1 << 20];
    setvbuf(stdout, out, _IOFBF, sizeof out);
    epfd = epoll_create1(0);
    conn_t *conns = calloc(count, sizeof *conns);
    t0 = now();
    for (int i = 0; i < count; i++) {
        conns[i].fd = -1;
        conns[i].n = i;
        start(&conns[i]);
    }
    struct epoll_event events[256];
    double until = t0 + seconds;
    while (now() < until) {
        double next = until;
        double t = now();
        for (int i = 0; i < count; i++) {
            if (conns[i].wake > 0) {
                if (conns[i].wake <= t) start(&conns[i]);
                else if (conns[i].wake < next) next = conns[i].wake;
            } else if (conns[i].fd < 0) {
                start(&conns[i]); /* a failed connect: try again */
            }
        }
        int timeout = (int)((next - t) * 1000) + 1;
        int n = epoll_wait(epfd, events, 256, timeout > 0 ? timeout : 0);
        for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events, honour, jitter);
    }
    fflush(stdout);
    return 0;
}
