/* lg-unpack: a .lgpkg -> a checkpoint directory, every file checked against the manifest. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "package.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-unpack NAME.lgpkg -o DIR [--force] [-q]\n"
"\n"
"Unpacks a package made by lg-pack. Every member is checked before it is written: regular files\n"
"with plain names listed in MANIFEST.json, each once and of the listed size (absolute paths, '..',\n"
"links, devices, duplicates and unlisted entries are refused), and every file's sha256 must match.\n"
"DIR appears only when all of it is there and checked (it is built in DIR.tmp-XXXXXX beside it);\n"
"on any error nothing is left.\n"
"\n"
"  -o, --output DIR   where the model goes\n"
"  --force            replace DIR if it exists (only once the new one is complete)\n"
"  -q, --quiet        no progress bar, no summary\n");
}

static void on_signal(int sig)
{
    (void)sig;
    lg_package_interrupted = 1;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"output", required_argument, 0, 'o'}, {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    lg_unpack_opts o = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "o:qh", longs, NULL)) != -1) {
        switch (opt) {
        case 'o': out = optarg; break;
        case 'f': o.force = 1; break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !out) {
        fprintf(stderr, "lg-unpack: give one NAME.lgpkg and -o DIR (--help for usage)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    lg_err err;
    char id[65];
    if (lg_package_unpack(argv[optind], out, &o, id, &err) != 0) {
        fprintf(stderr, "lg-unpack: %s\n", err.msg);
        return 1;
    }
    if (!o.quiet)
        printf("%s: unpacked and verified (package id %s)\n", out, id);
    return 0;
}
