/*
 * Preloaded beside Debian's libfaketime for the faults scenario's node with
 * a skewed wall clock (see world.rs, `start_node`).
 *
 * libfaketime shifts what clock_gettime(CLOCK_REALTIME) returns by FAKETIME
 * (the demo sets "+Ns" or "-Ns"). librdkafka waits on C11 condition
 * variables with an absolute CLOCK_REALTIME deadline that it computes from
 * that shifted clock, and glibc's cnd_timedwait compares the deadline with
 * the real clock inside glibc, where libfaketime cannot reach. At +10 s
 * every wait then lasts 10 s longer than asked and the Kafka client never
 * finishes its first metadata request; at -10 s every wait returns at once.
 * A host whose clock is wrong has no such problem: its deadlines and its
 * clock are wrong together. This shim shifts each deadline back by the same
 * offset before glibc sees it, so waits last what librdkafka asked for.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <threads.h>
#include <time.h>

static long skew_seconds(void) {
    const char *v = getenv("FAKETIME");
    return v ? strtol(v, NULL, 10) : 0;
}

int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mutex,
                  const struct timespec *restrict deadline) {
    static int (*next)(cnd_t *restrict, mtx_t *restrict,
                       const struct timespec *restrict);
    if (!next) {
        next = dlsym(RTLD_NEXT, "cnd_timedwait");
        if (!next) {
            return thrd_error;
        }
    }
    struct timespec real = *deadline;
    real.tv_sec -= skew_seconds();
    return next(cond, mutex, &real);
}
