/* lg-verify: checks a package or a checkpoint directory without unpacking anything to disk. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "package.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-verify NAME.lgpkg|DIR [-q]\n"
"\n"
"A package: reads it once, decompressing each member in memory, and checks the manifest's own\n"
"checksum, every member and every file against the sha256 and size the manifest lists, and that\n"
"config.json agrees with the tensors (names, shapes, dtypes; from the safetensors headers).\n"
"A directory: checks each file against its MANIFEST.json when there is one (lg-unpack's cache\n"
"directories keep it; without one the sha256 of each file is listed), then the same consistency.\n"
"Nothing is written but a scratch directory of headers (sparse files) under $TMPDIR, removed after.\n"
"Exit status 0 when everything holds, 1 otherwise (the first problem is printed).\n"
"\n"
"  -q, --quiet   only the verdict line\n");
}

static void on_signal(int sig)
{
    (void)sig;
    lg_package_interrupted = 1;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int quiet = 0, opt;
    while ((opt = getopt_long(argc, argv, "qh", longs, NULL)) != -1) {
        switch (opt) {
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-verify: give one NAME.lgpkg or DIR (--help for usage)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    const char *path = argv[optind];
    lg_verify_report r;
    lg_err err;
    if (lg_package_verify(path, quiet ? NULL : stdout, quiet, &r, &err) != 0) {
        fflush(stdout);
        fprintf(stderr, "lg-verify: FAIL: %s\n", err.msg);
        return 1;
    }
    if (r.has_manifest)
        printf("PASS %s: %d files, %.1f MB, every sha256 matches %s; config and tensors agree "
               "(%d layers, %d tensors)%s%s; package id %s\n",
               path, r.n_files, r.bytes / 1e6, LG_PKG_MANIFEST, r.n_layers, r.n_tensors,
               r.model[0] ? "; model " : "", r.model, r.manifest_sha256);
    else
        printf("PASS %s: config and tensors agree (%d layers, %d tensors); no %s here, so the %d files' "
               "sha256 are listed, not checked\n",
               path, r.n_layers, r.n_tensors, LG_PKG_MANIFEST, r.n_files);
    return 0;
}
