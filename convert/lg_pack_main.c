/* lg-pack: a checkpoint directory -> one .lgpkg file for distribution. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "package.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-pack MODEL_DIR -o NAME.lgpkg [--name NAME] [--level N] [--threads N] [--force] [-q]\n"
"\n"
"Packs a checkpoint directory (regular files, no subdirectories) into one file: a pax tar archive\n"
"whose first member, MANIFEST.json, names the model, its layer plan and quantization, and lists\n"
"every file with its size and sha256; *.safetensors files are stored zstd-compressed (tensors of\n"
"16-bit elements as byte planes, which compress better). The same directory always gives the same\n"
"bytes. The model must be consistent (config.json vs tensors), as lg-verify checks.\n"
"\n"
"  -o, --output FILE   the package (built in FILE.tmp-XXXXXX beside it, renamed when complete)\n"
"  --name NAME         model name in the manifest (default: the directory's name)\n"
"  --level N           zstd level 1..19 (default %d)\n"
"  --threads N         zstd threads (default: the number of CPUs; the bytes do not depend on it)\n"
"  --force             replace FILE if it exists\n"
"  --no-byte-planes    plain zstd for every tensor file (to measure what the byte planes gain)\n"
"  -q, --quiet         no progress bar, no summary\n"
"\n"
"Unpack with lg-unpack, check with lg-verify; lg-eval and lg-run accept the .lgpkg directly.\n",
            LG_PKG_DEFAULT_LEVEL);
}

static void on_signal(int sig)
{
    (void)sig;
    lg_package_interrupted = 1;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lg-pack: %s '%s': expected a whole number in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_NAME = 256, O_LEVEL, O_THREADS, O_FORCE, O_PLAIN };
    static const struct option longs[] = {
        {"output", required_argument, 0, 'o'}, {"name", required_argument, 0, O_NAME},
        {"level", required_argument, 0, O_LEVEL}, {"threads", required_argument, 0, O_THREADS},
        {"force", no_argument, 0, O_FORCE}, {"no-byte-planes", no_argument, 0, O_PLAIN},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    lg_pack_opts o = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "o:qh", longs, NULL)) != -1) {
        switch (opt) {
        case 'o': o.out_path = optarg; break;
        case O_NAME: o.name = optarg; break;
        case O_LEVEL:
            if (parse_int("--level", optarg, 1, 19, &o.level) != 0)
                return 2;
            break;
        case O_THREADS:
            if (parse_int("--threads", optarg, 1, 256, &o.workers) != 0)
                return 2;
            break;
        case O_FORCE: o.force = 1; break;
        case O_PLAIN: o.no_byte_planes = 1; break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || !o.out_path) {
        fprintf(stderr, "lg-pack: give one MODEL_DIR and -o NAME.lgpkg (--help for usage)\n");
        return 2;
    }
    o.model_dir = argv[optind];
    if (!lg_package_is_path(o.out_path))
        fprintf(stderr, "lg-pack: note: %s does not end in %s; lg-eval and lg-run recognise packages by "
                        "that ending\n", o.out_path, LG_PKG_EXT);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    lg_pack_result r;
    lg_err err;
    if (lg_package_pack(&o, &r, &err) != 0) {
        fprintf(stderr, "lg-pack: %s\n", err.msg);
        return 1;
    }
    if (!o.quiet) {
        printf("%s: %d files, %.1f MB -> %.1f MB in %.2f s", o.out_path, r.n_files, r.bytes_in / 1e6,
               r.bytes_out / 1e6, r.seconds);
        if (r.tensor_bytes_in > 0)
            printf(" (tensor files %.1f MB -> %.1f MB, %.3f of their size)", r.tensor_bytes_in / 1e6,
                   r.tensor_bytes_stored / 1e6, (double)r.tensor_bytes_stored / (double)r.tensor_bytes_in);
        printf("\npackage id (sha256 of %s): %s\n", LG_PKG_MANIFEST, r.manifest_sha256);
    }
    return 0;
}
