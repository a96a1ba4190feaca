/* What the bench's C load generators share: the clock and the requests read from stdin
 * (each as a decimal length, a newline and that many bytes), cycled through by index. */
#ifndef MMSERVE_LOADGEN_H
#define MMSERVE_LOADGEN_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#define HEAD_MAX 8192 /* the most bytes of an answer's head a client reads */

typedef struct {
    char *data;
    size_t len;
} request_t;

static request_t *requests;
static size_t request_count;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void read_requests(void) {
    size_t cap = 64;
    requests = malloc(cap * sizeof *requests);
    size_t len;
    while (scanf("%zu", &len) == 1) {
        getchar(); /* the newline */
        char *data = malloc(len);
        if (fread(data, 1, len, stdin) != len) {
            fprintf(stderr, "truncated request on stdin\n");
            exit(2);
        }
        if (request_count == cap) requests = realloc(requests, (cap *= 2) * sizeof *requests);
        requests[request_count++] = (request_t){data, len};
    }
    if (request_count == 0) {
        fprintf(stderr, "no requests on stdin\n");
        exit(2);
    }
}

/* Send what is left of request `r` on `fd` (`*sent` bytes of it are out); once all of it
 * is, watch `fd` (registered in `epfd` with `owner`) for reading only. Returns -1 when the
 * connection failed, 0 otherwise. */
static int send_rest(int epfd, int fd, void *owner, const request_t *r, size_t *sent) {
    ssize_t w = send(fd, r->data + *sent, r->len - *sent, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) return -1;
    if (w > 0) *sent += w;
    if (*sent == r->len) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = owner};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    return 0;
}

/* `got` more bytes were read into `head` (HEAD_MAX bytes) after the `*head_len` before
 * them. Returns the head's size once it ends (a blank line), 0 while it has not, -1 when
 * it outgrew HEAD_MAX. */
static long head_end(char *head, size_t *head_len, size_t got) {
    size_t before = *head_len;
    *head_len += got;
    head[*head_len] = 0;
    char *end = strstr(head + (before > 3 ? before - 3 : 0), "\r\n\r\n");
    if (end != NULL) return end + 4 - head;
    return *head_len >= HEAD_MAX - 1 ? -1 : 0;
}

#endif
