/* lg-convert: Hugging Face Llama-2 checkpoint -> LongGen checkpoint; also `inspect` and `synth`. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress_report.h"
#include "convert.h"
#include "inspect.h"
#include "synth.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: lg-convert SRC_DIR -o OUT_DIR [options]   convert a Llama checkpoint to LongGen\n"
"       lg-convert inspect DIR [--context N] [--json]\n"
"       lg-convert synth -o DIR [--shape 7b|13b|70b|tiny] [options]\n"
"       lg-convert compress-report DIR [--level L] [--threads N]   lossless ratio per tensor kind,\n"
"                               plain zstd vs byte planes + zstd at level L (default 3), GB/s\n"
"\n"
"Conversion options:\n"
"  -o, --output DIR        output directory (written as DIR.tmp-XXXXXX, renamed when complete)\n"
"  --full-layers LIST      layers that keep full attention: '10-20', '2,3', 'none', 'all'\n"
"                          (default: the middle round(L/3) layers)\n"
"  --sparse SPEC           pattern of the other layers (default sink_window:sink=64,window=4096)\n"
"                            sink_window:sink=S,window=W\n"
"                            block_strided:block=B,local=L,stride=V  (defaults 64,16,8)\n"
"  --plan FILE             take full layers and sparse pattern from a longgen_plan.json\n"
"  --rope SPEC             RoPE of the output (default theta:base=5000000 for a longer context):\n"
"                            keep | theta:base=B | linear[:factor=F] | dynamic[:factor=F]\n"
"                            yarn[:beta_fast=32,beta_slow=1,attention_factor=A]\n"
"                            llama3[:factor=F,low=1,high=4]     (factor defaults to context/original;\n"
"                            base=B may be added to any of them)\n"
"  --max-context N         max_position_embeddings of the output (default 131072)\n"
"  --dtype f16|bf16|f32    output dtype (default: keep the source's)\n"
"  --shard-size GB         largest output shard (default 5)\n"
"  --allow-extra           drop unknown tensors instead of refusing the checkpoint\n"
"  --force                 replace OUT_DIR if it exists (only once the new one is complete)\n"
"  -q, --quiet             no summary line\n"
"  --quant q8|q4|fp8       weight-only quantization of the linear layers (docs/FORMAT.md):\n"
"                            q8 int8 per output channel, q4 int4 per group, fp8 e4m3 per channel\n"
"  --group N               columns per scale (q4: 32, 64 (default), 128; q8/fp8: per channel\n"
"                          unless given)\n"
"  --zero-point min|none   q4: a per-group min (default) or symmetric codes\n"
"  --quant-exclude PATTERN keep matching tensors in float (glob on the name, or a substring);\n"
"                          repeatable\n"
"  --quant-embeddings      quantize model.embed_tokens too;  --quant-head: lm_head too\n"
"\n"
"synth options: --shape NAME, --layers N, --hidden N, --intermediate N, --heads N, --kv-heads N,\n"
"  --vocab N, --dtype f16|bf16|f32, --shards K, --seed S, --tie, --force\n");
}

static void on_signal(int sig)
{
    (void)sig;
    lg_convert_interrupted = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static int parse_dtype(const char *s, lg_dtype *out)
{
    if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0)
        *out = LG_DT_F16;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0)
        *out = LG_DT_BF16;
    else if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0)
        *out = LG_DT_F32;
    else
        return -1;
    return 0;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lg-convert: %s '%s': expected a whole number in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    static const struct option longs[] = {
        {"context", required_argument, 0, 'c'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    long context = 0;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        if (c == 'c' && parse_long("--context", optarg, 1, 1L << 30, &context) == 0)
            continue;
        if (c == 'j') {
            json = 1;
            continue;
        }
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-convert inspect: give one checkpoint directory\n");
        return 2;
    }
    lg_err err;
    if (lg_inspect(argv[optind], context, json, stdout, &err) != 0) {
        fprintf(stderr, "lg-convert inspect: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_compress_report(int argc, char **argv)
{
    static const struct option longs[] = {
        {"level", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    long level = 3, threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        if ((c == 'l' && parse_long("--level", optarg, 1, 19, &level) == 0) ||
            (c == 't' && parse_long("--threads", optarg, 1, 1024, &threads) == 0))
            continue;
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-convert compress-report: give one checkpoint directory\n");
        return 2;
    }
    lg_err err;
    lg_compress_report r;
    if (lg_compress_report_run(argv[optind], (int)level, (int)threads, &r, &err) != 0) {
        fprintf(stderr, "lg-convert compress-report: %s\n", err.msg);
        return 1;
    }
    lg_compress_report_print(&r, argv[optind], stdout);
    return 0;
}

static int cmd_synth(int argc, char **argv)
{
    enum { O_SHAPE = 256, O_LAYERS, O_HIDDEN, O_INTER, O_HEADS, O_KV, O_VOCAB, O_DTYPE, O_SHARDS,
           O_SEED, O_TIE, O_FORCE };
    static const struct option longs[] = {
        {"output", required_argument, 0, 'o'}, {"shape", required_argument, 0, O_SHAPE},
        {"layers", required_argument, 0, O_LAYERS}, {"hidden", required_argument, 0, O_HIDDEN},
        {"intermediate", required_argument, 0, O_INTER}, {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV}, {"vocab", required_argument, 0, O_VOCAB},
        {"dtype", required_argument, 0, O_DTYPE}, {"shards", required_argument, 0, O_SHARDS},
        {"seed", required_argument, 0, O_SEED}, {"tie", no_argument, 0, O_TIE},
        {"force", no_argument, 0, O_FORCE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    lg_synth_opts o = {.dtype = LG_DT_F16, .shards = 1, .seed = 1};
    lg_synth_preset("7b", &o);
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case O_SHAPE:
            if (lg_synth_preset(optarg, &o) != 0) {
                fprintf(stderr, "lg-convert synth: unknown shape '%s' (7b, 13b, 70b, tiny)\n", optarg);
                return 2;
            }
            break;
        case O_LAYERS: bad = parse_long("--layers", optarg, 1, 4096, &v); o.layers = (int)v; break;
        case O_HIDDEN: bad = parse_long("--hidden", optarg, 2, 1 << 20, &v); o.hidden = (int)v; break;
        case O_INTER: bad = parse_long("--intermediate", optarg, 1, 1 << 20, &v); o.intermediate = (int)v; break;
        case O_HEADS: bad = parse_long("--heads", optarg, 1, 4096, &v); o.heads = (int)v; break;
        case O_KV: bad = parse_long("--kv-heads", optarg, 1, 4096, &v); o.kv_heads = (int)v; break;
        case O_VOCAB: bad = parse_long("--vocab", optarg, 1, 1 << 24, &v); o.vocab = (int)v; break;
        case O_SHARDS: bad = parse_long("--shards", optarg, 1, 100000, &v); o.shards = (int)v; break;
        case O_SEED: bad = parse_long("--seed", optarg, 0, 1L << 62, &v); o.seed = (uint64_t)v; break;
        case O_DTYPE:
            if (parse_dtype(optarg, &o.dtype) != 0) {
                fprintf(stderr, "lg-convert synth: --dtype must be f16, bf16 or f32\n");
                return 2;
            }
            break;
        case O_TIE: o.tie = 1; break;
        case O_FORCE: o.force = 1; break;
        case 'h': usage(stdout); return 0;
        default: return 2;
        }
        if (bad)
            return 2;
    }
    if (!o.out_dir || optind != argc) {
        fprintf(stderr, "lg-convert synth: give -o DIR and no other arguments\n");
        return 2;
    }
    install_signals();
    lg_err err;
    if (lg_synth_write(&o, &err) != 0) {
        fprintf(stderr, "lg-convert synth: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "lg-convert synth: wrote %s (%d layers, hidden %d, %s, %d shard%s)\n", o.out_dir,
            o.layers, o.hidden, lg_dtype_name(o.dtype), o.shards, o.shards == 1 ? "" : "s");
    return 0;
}

static int cmd_convert(int argc, char **argv)
{
    enum { O_FULL = 256, O_SPARSE, O_PLAN, O_ROPE, O_MAXCTX, O_DTYPE, O_SHARD, O_EXTRA, O_FORCE,
           O_QUANT, O_GROUP, O_QZERO, O_QEXCL, O_QEMB, O_QHEAD };
    static const struct option longs[] = {
        {"output", required_argument, 0, 'o'}, {"full-layers", required_argument, 0, O_FULL},
        {"sparse", required_argument, 0, O_SPARSE}, {"plan", required_argument, 0, O_PLAN},
        {"rope", required_argument, 0, O_ROPE}, {"max-context", required_argument, 0, O_MAXCTX},
        {"dtype", required_argument, 0, O_DTYPE}, {"shard-size", required_argument, 0, O_SHARD},
        {"allow-extra", no_argument, 0, O_EXTRA}, {"force", no_argument, 0, O_FORCE},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {"quant", required_argument, 0, O_QUANT}, {"group", required_argument, 0, O_GROUP},
        {"zero-point", required_argument, 0, O_QZERO},
        {"quant-exclude", required_argument, 0, O_QEXCL},
        {"quant-embeddings", no_argument, 0, O_QEMB}, {"quant-head", no_argument, 0, O_QHEAD},
        {0, 0, 0, 0}};
    lg_convert_opts o = {0};
    int c, group = -1, zero_point = -1;
    long v;
    while ((c = getopt_long(argc, argv, "o:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case O_FULL: o.plan.full_layers = optarg; break;
        case O_SPARSE: o.plan.sparse = optarg; break;
        case O_PLAN: o.plan.plan_file = optarg; break;
        case O_ROPE: o.plan.rope = optarg; break;
        case O_MAXCTX:
            if (parse_long("--max-context", optarg, 1, 1L << 30, &v))
                return 2;
            o.plan.max_context = v;
            break;
        case O_DTYPE:
            if (parse_dtype(optarg, &o.dtype) != 0) {
                fprintf(stderr, "lg-convert: --dtype must be f16, bf16 or f32\n");
                return 2;
            }
            o.has_dtype = 1;
            break;
        case O_SHARD: {
            char *end;
            double gb = strtod(optarg, &end);
            if (end == optarg || *end || !(gb > 0) || gb > 1e6) {
                fprintf(stderr, "lg-convert: --shard-size '%s': expected GB > 0\n", optarg);
                return 2;
            }
            o.shard_bytes = (uint64_t)(gb * 1e9);
            break;
        }
        case O_EXTRA: o.allow_extra = 1; break;
        case O_FORCE: o.force = 1; break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case O_QUANT:
            if (lg_quant_method_from_name(optarg, &o.quant.scheme.method) != 0) {
                fprintf(stderr, "lg-convert: --quant must be q8, q4 or fp8\n");
                return 2;
            }
            break;
        case O_GROUP:
            if (parse_long("--group", optarg, 2, LG_QUANT_MAX_GROUP, &v))
                return 2;
            group = (int)v;
            break;
        case O_QZERO:
            if (strcmp(optarg, "min") != 0 && strcmp(optarg, "none") != 0) {
                fprintf(stderr, "lg-convert: --zero-point must be min or none\n");
                return 2;
            }
            zero_point = strcmp(optarg, "min") == 0;
            break;
        case O_QEXCL:
            if (o.quant.n_excluded == LG_QUANT_MAX_EXCLUDED ||
                strlen(optarg) >= sizeof o.quant.excluded[0]) {
                fprintf(stderr, "lg-convert: --quant-exclude: at most %d patterns of %zu bytes\n",
                        LG_QUANT_MAX_EXCLUDED, sizeof o.quant.excluded[0] - 1);
                return 2;
            }
            snprintf(o.quant.excluded[o.quant.n_excluded++], sizeof o.quant.excluded[0], "%s", optarg);
            break;
        case O_QEMB: o.quant.embeddings = 1; break;
        case O_QHEAD: o.quant.lm_head = 1; break;
        default: usage(stderr); return 2;
        }
    }
    if (o.quant.scheme.method == LG_QUANT_NONE &&
        (group >= 0 || zero_point >= 0 || o.quant.n_excluded || o.quant.embeddings || o.quant.lm_head)) {
        fprintf(stderr, "lg-convert: --group, --zero-point and --quant-* need --quant\n");
        return 2;
    }
    if (zero_point >= 0 && o.quant.scheme.method != LG_QUANT_Q4) {
        fprintf(stderr, "lg-convert: --zero-point is for --quant q4\n");
        return 2;
    }
    o.quant.scheme.group = group >= 0 ? group : o.quant.scheme.method == LG_QUANT_Q4 ? 64 : 0;
    o.quant.scheme.has_mins = o.quant.scheme.method == LG_QUANT_Q4 && zero_point != 0;
    if (optind != argc - 1 || !o.out_dir) {
        fprintf(stderr, "lg-convert: give one source directory and -o OUT_DIR (--help for more)\n");
        return 2;
    }
    o.src_dir = argv[optind];
    install_signals();
    lg_err err;
    lg_convert_result res;
    if (lg_convert_run(&o, &res, &err) != 0) {
        fprintf(stderr, "lg-convert: %s\n", err.msg);
        return 1;
    }
    if (!o.quiet)
        fprintf(stderr, "lg-convert: wrote %s: %d tensors in %d shard%s, %.3f GB in %.2f s (%.2f GB/s)%s\n",
                o.out_dir, res.n_tensors, res.n_shards, res.n_shards == 1 ? "" : "s",
                res.bytes_written / 1e9, res.seconds,
                res.seconds > 0 ? res.bytes_written / 1e9 / res.seconds : 0.0,
                res.n_dropped ? " (inv_freq/extra tensors dropped)" : "");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "inspect") == 0)
        return cmd_inspect(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "synth") == 0)
        return cmd_synth(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "compress-report") == 0)
        return cmd_compress_report(argc - 1, argv + 1);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    return cmd_convert(argc, argv);
}
