/* What the bench's C load generators share: the clock and the requests read from stdin
 * (each as a decimal length, a newline and that many bytes), cycled through by index. */
#ifndef MMSERVE_LOADGEN_H
#define MMSERVE_LOADGEN_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

#endif
