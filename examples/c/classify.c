/* classify: runs the MobileNetV2 that `qcc build` compiled into mobilenet.o on one image and
   prints its five most likely classes.

     classify IMAGE.ppm [LABELS.txt]

   IMAGE is a binary PPM (P6, 8-bit) already resized and cropped to the model's input size (for
   MobileNetV2 224x224: shorter side to 256, then the centre square), for example with
   ImageMagick: convert photo.jpg -resize 256x256^ -gravity center -extent 224x224 photo.ppm
   LABELS has one class name per line. Plain C99; no allocation but the scratch area. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mobilenet.h"

#define SIDE MOBILENET_INPUT_DIM2
#define CLASSES MOBILENET_OUTPUT_ELEMENTS

static unsigned char pixels[SIDE * SIDE * 3];
static float input[MOBILENET_INPUT_ELEMENTS];
static float logits[CLASSES];

/* Reads a P6 header token (skipping whitespace and # comments). */
static long token(FILE *f) {
    int c = fgetc(f);
    while (c == '#' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        if (c == '#')
            while (c != '\n' && c != EOF) c = fgetc(f);
        c = fgetc(f);
    }
    long v = 0;
    if (c < '0' || c > '9') return -1;
    while (c >= '0' && c <= '9') {
        v = v * 10 + (c - '0');
        c = fgetc(f);
    }
    return v; /* the one whitespace after the number is consumed */
}

static int read_ppm(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open %s\n", path);
        return 0;
    }
    char magic[2];
    long w, h, max;
    int ok = fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && magic[1] == '6';
    if (ok) {
        w = token(f);
        h = token(f);
        max = token(f);
        ok = w == SIDE && h == SIDE && max == 255;
        if (!ok)
            fprintf(stderr, "classify: %s is %ldx%ld (max %ld); the model takes %dx%d, 8-bit\n",
                    path, w, h, max, SIDE, SIDE);
    } else {
        fprintf(stderr, "classify: %s is not a binary PPM (P6)\n", path);
    }
    ok = ok && fread(pixels, 1, sizeof pixels, f) == sizeof pixels;
    fclose(f);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: classify IMAGE.ppm [LABELS.txt]\n");
        return 2;
    }
    if (!read_ppm(argv[1])) return 1;

    /* Interleaved RGB bytes to the model's [1, 3, H, W] floats, as the header says. */
    const float mean[3] = {MOBILENET_MEAN0, MOBILENET_MEAN1, MOBILENET_MEAN2};
    const float std[3] = {MOBILENET_STD0, MOBILENET_STD1, MOBILENET_STD2};
    for (int c = 0; c < 3; c++) {
        int from = MOBILENET_BGR ? 2 - c : c;
        for (int i = 0; i < SIDE * SIDE; i++)
            input[c * SIDE * SIDE + i] = ((float)pixels[3 * i + from] / 255.0f - mean[c]) / std[c];
    }

    unsigned char *block = malloc(MOBILENET_SCRATCH_BYTES + MOBILENET_SCRATCH_ALIGN);
    if (!block) return 1;
    void *scratch = (void *)(((uintptr_t)block + MOBILENET_SCRATCH_ALIGN - 1) &
                             ~(uintptr_t)(MOBILENET_SCRATCH_ALIGN - 1));
    int code = mobilenet_run(input, logits, scratch);
    free(block);
    if (code != MOBILENET_OK) {
        fprintf(stderr, "classify: mobilenet_run returned %d\n", code);
        return 1;
    }

    /* Class names, if given: line i names class i. */
    static char names[CLASSES][96];
    FILE *labels = argc > 2 ? fopen(argv[2], "r") : NULL;
    for (int i = 0; i < CLASSES; i++) {
        names[i][0] = 0;
        if (labels && fgets(names[i], sizeof names[i], labels))
            names[i][strcspn(names[i], "\n")] = 0;
    }
    if (labels) fclose(labels);

    /* The five largest logits (the lower class first among equal ones). */
    for (int rank = 0; rank < 5; rank++) {
        int best = 0;
        for (int i = 1; i < CLASSES; i++)
            if (logits[i] > logits[best]) best = i;
        printf("%4d  %7.3f  %s\n", best, logits[best], names[best]);
        logits[best] = -1e30f;
    }
    return 0;
}
