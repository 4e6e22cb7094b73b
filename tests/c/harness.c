/* Runs a model built by `qcc build --name model` on inputs from a file and writes its outputs,
   as tests/tests/build.rs drives it:

     harness f32|u8 IN OUT [RUNS]

   IN holds whole inputs (MODEL_INPUT_ELEMENTS floats, or stored bytes for u8), OUT receives one
   output per input. With RUNS, every input runs RUNS times and the median latency of the first
   is printed in milliseconds. The run functions' error codes are checked first. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

static int fail(const char *what) {
    fprintf(stderr, "harness: %s\n", what);
    return 1;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) return fail("usage: harness f32|u8 IN OUT [RUNS]");
    int bytes = strcmp(argv[1], "u8") == 0;
    size_t in_size = bytes ? sizeof(uint8_t) : sizeof(float);
    size_t out_size = in_size;
    size_t in_len = (size_t)MODEL_INPUT_ELEMENTS * in_size;
    size_t out_len = (size_t)MODEL_OUTPUT_ELEMENTS * out_size;
    long runs = argc > 4 ? atol(argv[4]) : 0;

    /* The scratch area, aligned by hand (C99 has no aligned allocation). */
    unsigned char *block = malloc(MODEL_SCRATCH_BYTES + MODEL_SCRATCH_ALIGN);
    if (!block) return fail("out of memory");
    uintptr_t at = ((uintptr_t)block + MODEL_SCRATCH_ALIGN - 1) &
                   ~(uintptr_t)(MODEL_SCRATCH_ALIGN - 1);
    void *scratch = (void *)at;
    /* Garbage, as a caller's scratch area may hold: the model must not depend on it. */
    memset(block, 0xa5, MODEL_SCRATCH_BYTES + MODEL_SCRATCH_ALIGN);

    FILE *in = fopen(argv[2], "rb");
    FILE *out = fopen(argv[3], "wb");
    if (!in || !out) return fail("cannot open the input or the output file");
    unsigned char *x = malloc(in_len);
    unsigned char *y = malloc(out_len);
    double *times = malloc(sizeof(double) * (size_t)(runs > 0 ? runs : 1));
    if (!x || !y || !times) return fail("out of memory");

    /* Bad arguments are refused before anything is written. */
    if (model_run((const float *)x, (float *)y, NULL) != MODEL_ERROR_NULL)
        return fail("a null scratch area was not refused");
    if (model_run_u8(NULL, y, scratch) != MODEL_ERROR_NULL)
        return fail("a null input was not refused");
    if (model_run_u8(x, y, (unsigned char *)scratch + 1) != MODEL_ERROR_MISALIGNED)
        return fail("a misaligned scratch area was not refused");

    long images = 0;
    while (fread(x, 1, in_len, in) == in_len) {
        long r;
        for (r = 0; r < (runs > 0 ? runs : 1); r++) {
            double t0 = now_ms();
            int code = bytes ? model_run_u8(x, y, scratch)
                             : model_run((const float *)x, (float *)y, scratch);
            times[r] = now_ms() - t0;
            if (code != MODEL_OK) return fail("a run returned an error");
        }
        if (runs > 0 && images == 0) {
            qsort(times, (size_t)runs, sizeof(double), by_value);
            printf("median %.3f ms over %ld runs\n", times[runs / 2], runs);
        }
        if (fwrite(y, 1, out_len, out) != out_len) return fail("cannot write the output");
        images++;
    }
    fclose(in);
    if (fclose(out) != 0) return fail("cannot write the output");
    free(x);
    free(y);
    free(times);
    free(block);
    fprintf(stderr, "harness: %ld input(s)\n", images);
    return images > 0 ? 0 : fail("the input file holds no whole input");
}
