/* An open-loop HTTP/1.1 client in C for bench.openloop: requests leave on a fixed schedule,
 * whatever the server does.
 *
 *   openloop_client PORT RATE SECONDS MAX_CONNECTIONS TIMEOUT_S < requests
 *
 * stdin holds the requests to cycle through, each as a decimal length, a newline and that
 * many bytes (complete HTTP/1.1 requests, keep-alive). Request i is due at
 * start + i / RATE, for round(RATE * SECONDS) requests. A due request goes out on an idle
 * kept-alive connection, else on a new one while fewer than MAX_CONNECTIONS are open, else
 * it waits for the first connection to come free (counted: the generator fell behind).
 * Answers are read whole (Content-Length; chunked bodies and bodies until close too).
 * A kept-alive connection the server closed while idle is retried once on a fresh one.
 * After the last send, answers are awaited for at most TIMEOUT_S seconds.
 *
 * One thread on epoll, so that the generator costs little of the cores it shares with the
 * server. Prints one line per request:
 *   "STATUS SENT_S LAG_MS LATENCY_MS"
 * SENT_S: when it went out, from the start of the schedule (-1 when it never did); LAG_MS:
 * how late it went out; LATENCY_MS: from its due time to the end of its answer. STATUS 0:
 * the connection failed; -1: no answer within the timeout. Then one line
 * "# CONNECTIONS WAITED" (connections opened, requests that waited for one).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define PREOPEN 8

typedef struct conn {
    int fd;
    long job;          /* the request it carries, -1 when idle */
    int used;          /* has answered a request: a failure may be a closed keep-alive */
    int connected;
    size_t sent;
    char head[HEAD_MAX];
    size_t head_len;
    long body_left;    /* -1 while reading the head */
    int chunked, until_close, chunk_state, status, keep;
    long chunk_left;
    char line[64];
    size_t line_len;
    struct conn *next_idle;
} conn_t;

typedef struct {
    double due, sent, lag_ms, latency_ms;
    int status, attempts;
} job_t;

static int epfd, port, max_connections;
static double t0;
static job_t *jobs;
static long *waiting; /* due jobs waiting for a connection, FIFO */
static long wait_head, wait_tail;
static conn_t *idle;
static int open_count, opened_total, waited_total;
static long outstanding;

/* epoll_wait with a timeout in nanoseconds (epoll_pwait2, Linux 5.11), called directly so
 * that older C libraries build it too; -1 with ENOSYS where the kernel lacks it. */
static int wait_precise(struct epoll_event *events, int max, double seconds) {
#ifdef SYS_epoll_pwait2
    struct timespec ts = {.tv_sec = (time_t)seconds};
    ts.tv_nsec = (long)((seconds - ts.tv_sec) * 1e9);
    return (int)syscall(SYS_epoll_pwait2, epfd, events, max, &ts, NULL, 0);
#else
    (void)events, (void)max, (void)seconds;
    errno = ENOSYS;
    return -1;
#endif
}

static conn_t *connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    conn_t *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->job = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    open_count++;
    opened_total++;
    return c;
}

static void drop(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    open_count--;
    free(c);
}

static void assign(conn_t *c, long job);

/* A connection that is free: give it the longest-waiting due request, or keep it idle. */
static void release(conn_t *c) {
    c->job = -1;
    if (wait_head < wait_tail) {
        assign(c, waiting[wait_head++]);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev); /* EPOLLIN: notice the server closing it */
    c->next_idle = idle;
    idle = c;
}

/* The request is over (status 0: the connection failed). */
static void finish(conn_t *c, int status) {
    long j = c->job;
    job_t *job = &jobs[j];
    int fresh = !c->used;
    int keep = status > 0 && c->keep;
    if (status > 0) c->used = 1;
    if (keep) {
        release(c);
    } else {
        drop(c);
    }
    if (status == 0 && !fresh && job->attempts == 1) {
        /* A kept-alive connection the server closed while idle: once more, on a new one. */
        conn_t *n = connect_one();
        if (n != NULL) {
            assign(n, j);
            return;
        }
    }
    job->status = status;
    job->latency_ms = (now() - job->due) * 1000;
    outstanding--;
    if (!keep && wait_head < wait_tail && open_count < max_connections) {
        conn_t *n = connect_one();
        if (n != NULL) assign(n, waiting[wait_head++]);
    }
}

static void assign(conn_t *c, long j) {
    job_t *job = &jobs[j];
    c->job = j;
    c->sent = 0;
    c->head_len = 0;
    c->body_left = -1;
    c->chunked = c->until_close = c->chunk_state = 0;
    c->status = 0;
    c->keep = 1;
    c->line_len = 0;
    if (job->attempts == 0) {
        double t = now();
        job->sent = t - t0;
        job->lag_ms = (t - job->due) * 1000;
    }
    job->attempts++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void dispatch(long j) {
    outstanding++;
    if (idle != NULL) {
        conn_t *c = idle;
        idle = c->next_idle;
        assign(c, j);
        return;
    }
    if (open_count < max_connections) {
        conn_t *c = connect_one();
        if (c != NULL) {
            assign(c, j);
            return;
        }
    }
    waited_total++;
    waiting[wait_tail++] = j;
}

static void parse_head(conn_t *c) {
    c->head[c->head_len] = 0;
    int minor = 1;
    sscanf(c->head, "HTTP/1.%d %d", &minor, &c->status);
    c->keep = minor >= 1;
    long length = -1;
    for (char *line = strstr(c->head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (!strncasecmp(h, "content-length:", 15)) length = strtol(h + 15, NULL, 10);
        else if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h, "chunked") != NULL &&
                 strcasestr(h, "chunked") < strstr(h, "\r\n"))
            c->chunked = 1;
        else if (!strncasecmp(h, "connection:", 11)) {
            const char *v = h + 11;
            while (*v == ' ') v++;
            c->keep = strncasecmp(v, "close", 5) != 0;
        }
    }
    if (c->chunked) {
        c->body_left = 1; /* read until the last chunk */
    } else if (length >= 0) {
        c->body_left = length;
    } else {
        c->until_close = 1;
        c->keep = 0;
        c->body_left = 1;
    }
}

/* Chunked body bytes: returns 1 when the last chunk (and its trailer) has been read. */
static int feed_chunked(conn_t *c, const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (c->chunk_state == 1) { /* inside a chunk's data and its CRLF */
            size_t take = (size_t)c->chunk_left < len - i ? (size_t)c->chunk_left : len - i;
            c->chunk_left -= take;
            i += take - 1;
            if (c->chunk_left == 0) c->chunk_state = 0;
            continue;
        }
        /* a size line (state 0) or the trailer after the last chunk (state 2) */
        if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = data[i];
        if (data[i] != '\n') continue;
        c->line[c->line_len] = 0;
        int blank = c->line_len <= 2;
        c->line_len = 0;
        if (c->chunk_state == 2) {
            if (blank) return 1;
            continue;
        }
        if (blank) continue; /* the CRLF between chunks */
        long size = strtol(c->line, NULL, 16);
        if (size == 0) c->chunk_state = 2;
        else {
            c->chunk_left = size + 2;
            c->chunk_state = 1;
        }
    }
    return 0;
}

static void on_event(conn_t *c, unsigned events) {
    if (c->job < 0) { /* idle: the server closed it (or sent what nobody asked for) */
        if (idle == c) idle = c->next_idle;
        else
            for (conn_t *p = idle; p != NULL; p = p->next_idle)
                if (p->next_idle == c) {
                    p->next_idle = c->next_idle;
                    break;
                }
        drop(c);
        return;
    }
    if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
        finish(c, 0);
        return;
    }
    request_t *r = &requests[c->job % request_count];
    if ((events & EPOLLOUT) && c->sent < r->len && send_rest(epfd, c->fd, c, r, &c->sent) < 0) {
        finish(c, 0);
        return;
    }
    if (!(events & EPOLLIN)) return;
    for (;;) {
        char body[65536];
        ssize_t got;
        if (c->body_left < 0) {
            got = recv(c->fd, c->head + c->head_len, HEAD_MAX - 1 - c->head_len, 0);
        } else {
            size_t want = sizeof body;
            if (!c->chunked && !c->until_close && c->body_left < (long)want) want = c->body_left;
            got = recv(c->fd, body, want, 0);
        }
        if (got < 0 && errno == EAGAIN) return;
        if (got == 0 && c->until_close && c->body_left >= 0) {
            finish(c, c->status);
            return;
        }
        if (got <= 0) { /* closed (or failed) before the answer was whole */
            finish(c, 0);
            return;
        }
        const char *extra = body;
        size_t extra_len = got;
        if (c->body_left < 0) {
            long head_size = head_end(c->head, &c->head_len, got);
            if (head_size < 0) {
                finish(c, 0);
                return;
            }
            if (head_size == 0) continue;
            extra = c->head + head_size;
            extra_len = c->head_len - head_size;
            parse_head(c);
        }
        if (c->chunked) {
            if (feed_chunked(c, extra, extra_len)) {
                finish(c, c->status);
                return;
            }
        } else if (!c->until_close) {
            c->body_left -= (long)extra_len;
            if (c->body_left <= 0) {
                finish(c, c->status);
                return;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s PORT RATE SECONDS MAX_CONNECTIONS TIMEOUT_S < requests\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    double rate = atof(argv[2]);
    double seconds = atof(argv[3]);
    max_connections = atoi(argv[4]);
    double timeout_s = atof(argv[5]);
    if (rate <= 0 || seconds <= 0 || max_connections < 1) {
        fprintf(stderr, "rate, seconds and connections must be positive\n");
        return 2;
    }
    read_requests();
    long scheduled = lround(rate * seconds);
    if (scheduled < 1) scheduled = 1;
    jobs = calloc(scheduled, sizeof *jobs);
    waiting = calloc(scheduled, sizeof *waiting);
    epfd = epoll_create1(0);
    for (int i = 0; i < PREOPEN && i < max_connections; i++) {
        conn_t *c = connect_one();
        if (c != NULL) release(c);
    }
    t0 = now() + 0.01;
    double interval = 1.0 / rate;
    for (long i = 0; i < scheduled; i++) {
        jobs[i].due = t0 + i * interval;
        jobs[i].sent = -1;
    }
    struct epoll_event events[256];
    long next = 0;
    double deadline = 0;
    int precise = 1; /* epoll_pwait2 (Linux 5.11); epoll_wait's milliseconds otherwise */
    for (;;) {
        double t = now();
        while (next < scheduled && jobs[next].due <= t) dispatch(next++);
        if (next == scheduled) {
            if (deadline == 0) deadline = t + timeout_s;
            if (outstanding == 0 || t >= deadline) break;
        }
        double until = next < scheduled ? jobs[next].due : deadline;
        double wait = until > t ? until - t : 0;
        int n = -1;
        if (precise) { /* wake at the due time itself, not on a millisecond */
            n = wait_precise(events, 256, wait);
            if (n < 0 && errno == ENOSYS) precise = 0;
        }
        if (!precise) n = epoll_wait(epfd, events, 256, (int)ceil(wait * 1000));
        for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events);
    }
    static char out[1 << 20];
    setvbuf(stdout, out, _IOFBF, sizeof out);
    for (long i = 0; i < scheduled; i++) {
        job_t *j = &jobs[i];
        if (j->status == 0 && j->latency_ms == 0 && j->sent >= 0) j->status = -1; /* no answer */
        if (j->sent < 0) j->status = -1;
        printf("%d %.6f %.3f %.3f\n", j->status, j->sent, j->lag_ms, j->latency_ms);
    }
    printf("# %d %d\n", opened_total, waited_total);
    fflush(stdout);
    return 0;
}
