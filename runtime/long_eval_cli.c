#include "long_eval_cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_file.h"
#include "engine.h"
#include "model.h"
#include "needle.h"
#include "package.h"
#include "passkey.h"
#include "plot_svg.h"
#include "ppl_position.h"
#include "tokenizer.h"

#define LG_MAX_LENGTH (1L << 24)

const char lg_long_eval_usage[] =
"       lg-eval needle MODEL [--haystack DIR_OR_FILE] [--lengths 256,512,1k] [--depths 0,25,...,100]\n"
"                      [--needle TEXT --question TEXT --answer TEXT [--answer-prefix TEXT]]\n"
"                      [--max-new N] [--json-out FILE] [--svg FILE] [--quiet]\n"
"       lg-eval passkey MODEL [--lengths 1k,2k,4k] [--trials N] [--seed S] [--json]\n"
"       lg-eval ppl MODEL --by-position --text FILE [--text FILE...] [--ctx N] [--buckets N]\n"
"                      [--plot FILE.svg] [--json]\n"
"       (each also takes --plan FILE, --device cpu|cuda, --dtype f16|bf16|f32 and --tp N;\n"
"       lengths as 4096, 1k, 128k)\n";

/* ---------------------------------------------------------------- lists */

int lg_parse_length(const char *s, long *out, lg_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno)
        return lg_err_set(err, "length '%s' is not a number (like 4096, 1k, 128k)", s);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end || !(v >= 1) || v > (double)LG_MAX_LENGTH || v != floor(v))
        return lg_err_set(err, "length '%s' must be a whole number of tokens in 1..%ld (like 4096, 1k, 128k)",
                          s, LG_MAX_LENGTH);
    *out = (long)v;
    return 0;
}

/* The items of a comma list (spaces before each dropped), pointing into a copy of it. */
typedef struct str_list {
    char *buf;
    char **items;
    int n;
} str_list;

static int split_commas(const char *s, str_list *l)
{
    l->n = 0;
    l->buf = strdup(s);
    l->items = malloc((strlen(s) / 2 + 1) * sizeof *l->items);
    if (!l->buf || !l->items)
        return -1;
    for (char *save = NULL, *tok = strtok_r(l->buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        l->items[l->n++] = tok;
    }
    return 0;
}

static void str_list_free(str_list *l)
{
    free(l->buf);
    free(l->items);
}

int lg_parse_lengths(const char *s, long **out, int *n, lg_err *err)
{
    str_list l;
    if (split_commas(s, &l) != 0) {
        str_list_free(&l);
        return lg_err_set(err, "out of memory");
    }
    int k = l.n;
    char **items = l.items;
    long *v = malloc(((size_t)k + 1) * sizeof *v);
    int rc = v ? 0 : lg_err_set(err, "out of memory");
    if (rc == 0 && k == 0)
        rc = lg_err_set(err, "--lengths '%s': no length given", s);
    for (int i = 0; rc == 0 && i < k; i++)
        rc = lg_parse_length(items[i], &v[i], err);
    str_list_free(&l);
    if (rc != 0) {
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

int lg_parse_depths(const char *s, double **out, int *n, lg_err *err)
{
    str_list l;
    if (split_commas(s, &l) != 0) {
        str_list_free(&l);
        return lg_err_set(err, "out of memory");
    }
    int k = l.n, m = 0;
    char **items = l.items;
    size_t cap = (size_t)k + 1;
    double *v = malloc(cap * sizeof *v);
    int rc = v ? 0 : lg_err_set(err, "out of memory");
    if (rc == 0 && k == 0)
        rc = lg_err_set(err, "--depths '%s': no depth given", s);
    for (int i = 0; rc == 0 && i < k; i++) {
        if (strcmp(items[i], "...") == 0) {
            if (m < 2 || i + 1 >= k || strcmp(items[i + 1], "...") == 0) {
                rc = lg_err_set(err, "--depths '%s': '...' needs two depths before it and one after", s);
                break;
            }
            double step = v[m - 1] - v[m - 2], last;
            char *end;
            last = strtod(items[i + 1], &end);
            if (!(step > 0) || end == items[i + 1] || *end || last < v[m - 1]) {
                rc = lg_err_set(err, "--depths '%s': '...' needs increasing depths around it", s);
                break;
            }
            /* the values strictly between v[m-1] and last; last itself is the next item */
            for (double x = v[m - 1] + step; x < last - 1e-9 * step; x += step) {
                if ((size_t)m + 1 >= cap) {
                    double *g = realloc(v, (cap *= 2) * sizeof *v);
                    if (!g) {
                        rc = lg_err_set(err, "out of memory");
                        break;
                    }
                    v = g;
                }
                if ((size_t)m > 10000) {
                    rc = lg_err_set(err, "--depths '%s': more than 10000 depths", s);
                    break;
                }
                v[m++] = x;
            }
            continue;
        }
        char *end;
        double x = strtod(items[i], &end);
        if (end == items[i] || *end || !(x >= 0 && x <= 100)) {
            rc = lg_err_set(err, "--depths: '%s' is not a percentage in 0..100", items[i]);
            break;
        }
        if ((size_t)m + 1 >= cap) {
            double *g = realloc(v, (cap *= 2) * sizeof *v);
            if (!g) {
                rc = lg_err_set(err, "out of memory");
                break;
            }
            v = g;
        }
        v[m++] = x;
    }
    str_list_free(&l);
    if (rc != 0) {
        free(v);
        return -1;
    }
    *out = v;
    *n = m;
    return 0;
}

/* ---------------------------------------------------------------- shared pieces */

enum {
    O_HAYSTACK = 300, O_LENGTHS, O_DEPTHS, O_NEEDLE, O_QUESTION, O_ANSWER, O_PREFIX, O_MAX_NEW,
    O_JSON_OUT, O_SVG, O_QUIET, O_TRIALS, O_SEED, O_JSON, O_PLAN, O_DEVICE, O_TEXT, O_CTX, O_BUCKETS,
    O_PLOT, O_BY_POSITION, O_TP, O_DTYPE,
};

typedef struct run_opts {
    const char *model, *plan, *device;
    int json, quiet;
    int tp;            /* GPUs (--tp), 0: one */
    const char *dtype; /* --dtype, NULL: the checkpoint's (lg_engine_opts.dtype) */
} run_opts;

/* An engine option (--tp N or --dtype T) into o; 2 (the usage exit) on a bad value, with the
 * message. */
static int parse_engine_opt(run_opts *o, int opt, const char *arg)
{
    lg_err err;
    int rc = opt == O_TP ? lg_engine_parse_tp(arg, &o->tp, &err)
                         : lg_engine_parse_dtype(arg, &o->dtype, &err);
    if (rc != 0) {
        fprintf(stderr, "lg-eval: %s\n", err.msg);
        return 2;
    }
    return 0;
}

/* MODEL is a checkpoint directory or a .lgpkg package (unpacked once into the cache, as for every
 * lg-eval command). */
static int load_model(const run_opts *o, const char *cmd, lg_model **m, lg_tokenizer **t)
{
    lg_err err;
    static char pkg_dir[4096];
    const char *dir = o->model;
    *m = NULL;
    *t = NULL;
    if (lg_engine_check_device(o->device, &err) != 0) {
        fprintf(stderr, "lg-eval %s: %s\n", cmd, err.msg);
        return 2;
    }
    if (lg_package_is_path(dir)) {
        if (lg_package_open_cached(dir, pkg_dir, sizeof pkg_dir, &err) != 0) {
            fprintf(stderr, "lg-eval %s: %s\n", cmd, err.msg);
            return 1;
        }
        dir = pkg_dir;
    }
    *m = lg_engine_load_model(dir, o->device, &err);
    if (*m && o->plan && lg_model_load_plan(*m, o->plan, &err) != 0) {
        lg_model_free(*m);
        *m = NULL;
    }
    if (!*m) {
        fprintf(stderr, "lg-eval %s: %s\n", cmd, err.msg);
        return 1;
    }
    char who[64];
    snprintf(who, sizeof who, "lg-eval %s", cmd);
    lg_model_print_plan_note(*m, who);
    /* these evaluations build text prompts, so a checkpoint used through token ids alone (like the
     * tiny-llama-fp16 and stories260K fixtures) cannot run them; a tokenizer of a larger vocabulary
     * would feed the model ids past its embedding table */
    int bad = !(*t = lg_tokenizer_load(dir, &err));
    if (!bad && lg_tokenizer_vocab_size(*t) > (*m)->vocab_size)
        bad = lg_err_set(&err, "%s has %d pieces, more than the model's vocab_size %d: it is not this "
                         "model's tokenizer", lg_tokenizer_source(*t), lg_tokenizer_vocab_size(*t),
                         (*m)->vocab_size);
    if (bad) {
        fprintf(stderr, "lg-eval %s: needs the model's own tokenizer: %s\n", cmd, err.msg);
        lg_tokenizer_free(*t);
        lg_model_free(*m);
        *t = NULL;
        *m = NULL;
        return 1;
    }
    return 0;
}

/* Lengths past what the model was trained for run (RoPE extrapolates), with a warning. */
static void warn_lengths(const char *cmd, const lg_model *m, const long *lengths, int n)
{
    for (int i = 0; i < n; i++) {
        char name[24];
        if (lengths[i] > m->max_pos)
            fprintf(stderr, "lg-eval %s: warning: length %s is past the model's max_position_embeddings (%d)\n",
                    cmd, lg_length_name(lengths[i], name), m->max_pos);
    }
}

static long max_of(const long *v, int n)
{
    long x = 0;
    for (int i = 0; i < n; i++)
        x = v[i] > x ? v[i] : x;
    return x;
}

static const char *default_haystack(char *buf, size_t n)
{
    const char *env = getenv("LG_FIXTURES");
    snprintf(buf, n, "%s/text/pg-essays", env && *env ? env : "../shared/fixtures");
    return buf;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lg-eval: %s '%s' must be a whole number in %ld..%ld\n", opt, s, lo, hi);
        return 2;
    }
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- needle */

static const char needle_help[] =
"usage: lg-eval needle MODEL [options]\n"
"\n"
"Needle in a haystack (gkamradt/LLMTest_NeedleInAHaystack): for every length and depth, the haystack\n"
"text cut at sentence boundaries so that the whole prompt plus the answer fits the length, the needle\n"
"sentence inserted at the depth, the question asked; the greedy answer is scored: contains (the answer\n"
"verbatim, case and spacing ignored), overlap (fraction of its words found), score = (contains +\n"
"overlap) / 2. Prints the grid as a table; writes it as JSON and as an SVG heatmap.\n"
"\n"
"  --haystack PATH     a text file, or a directory whose *.txt files (not LICENSE*) are joined in\n"
"                      sorted order (default: $LG_FIXTURES/text/pg-essays, else\n"
"                      ../shared/fixtures/text/pg-essays: Paul Graham's essays)\n"
"  --lengths LIST      context lengths in tokens: 256,512,1k (default), 1k,2k,...; lengths past the\n"
"                      model's max_position_embeddings run with a warning\n"
"  --depths LIST       needle depths in percent: 0,25,50,75,100 (default); 0,10,...,100\n"
"  --needle TEXT       default: \"\\nThe best thing to do in San Francisco is eat a sandwich and sit\n"
"                      in Dolores Park on a sunny day.\\n\"\n"
"  --question TEXT     default: \"What is the best thing to do in San Francisco?\"\n"
"  --answer TEXT       scored against the output; default: \"eat a sandwich and sit in Dolores Park\"\n"
"  --answer-prefix T   written after \"Answer:\" for the model to continue; default \"The best thing to\n"
"                      do in San Francisco is\" with the default needle, none with --needle\n"
"  --max-new N         answer tokens at most (default 32; stops at EOS or a line break)\n"
"  --json-out FILE     the grid as JSON      --svg FILE   the heatmap\n"
"  --plan FILE         a longgen_plan.json instead of the config's plan\n"
"  --device cpu|cuda   the forward pass (default cpu; cuda in builds with CUDA)\n"
"  --dtype T           with --device cuda: f16, bf16 or f32 (default: the checkpoint's type)\n"
"  --tp N              with --device cuda: the model split over N GPUs (tensor parallel)\n"
"  --quiet             no line per cell on stderr\n";

typedef struct needle_args {
    run_opts o;
    const char *haystack, *json_out, *svg;
    lg_needle_spec spec;
    long *lengths;
    double *depths;
    int n_lengths, n_depths;
    long max_new;
} needle_args;

static int needle_parse(int argc, char **argv, needle_args *a)
{
    static const struct option longs[] = {
        {"haystack", required_argument, 0, O_HAYSTACK}, {"lengths", required_argument, 0, O_LENGTHS},
        {"depths", required_argument, 0, O_DEPTHS}, {"needle", required_argument, 0, O_NEEDLE},
        {"question", required_argument, 0, O_QUESTION}, {"answer", required_argument, 0, O_ANSWER},
        {"answer-prefix", required_argument, 0, O_PREFIX}, {"max-new", required_argument, 0, O_MAX_NEW},
        {"json-out", required_argument, 0, O_JSON_OUT}, {"svg", required_argument, 0, O_SVG},
        {"quiet", no_argument, 0, O_QUIET}, {"plan", required_argument, 0, O_PLAN},
        {"device", required_argument, 0, O_DEVICE}, {"tp", required_argument, 0, O_TP},
        {"dtype", required_argument, 0, O_DTYPE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *lengths = "256,512,1k", *depths = "0,25,50,75,100", *prefix = NULL;
    lg_needle_spec def = lg_needle_default_spec();
    a->spec = def;
    a->max_new = 32;
    int opt, custom = 0;
    lg_err err;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (opt) {
        case O_HAYSTACK: a->haystack = optarg; break;
        case O_LENGTHS: lengths = optarg; break;
        case O_DEPTHS: depths = optarg; break;
        case O_NEEDLE: a->spec.needle = optarg; custom = 1; break;
        case O_QUESTION: a->spec.question = optarg; custom = 1; break;
        case O_ANSWER: a->spec.answer = optarg; custom = 1; break;
        case O_PREFIX: prefix = optarg; break;
        case O_MAX_NEW:
            if (parse_int("--max-new", optarg, 1, 4096, &a->max_new))
                return 2;
            break;
        case O_JSON_OUT: a->json_out = optarg; break;
        case O_SVG: a->svg = optarg; break;
        case O_QUIET: a->o.quiet = 1; break;
        case O_PLAN: a->o.plan = optarg; break;
        case O_DEVICE: a->o.device = optarg; break;
        case O_TP:
        case O_DTYPE:
            if (parse_engine_opt(&a->o, opt, optarg))
                return 2;
            break;
        case 'h': fputs(needle_help, stdout); return -1;
        default: fputs(needle_help, stderr); return 2;
        }
    }
    a->spec.answer_prefix = prefix ? prefix : custom ? "" : def.answer_prefix;
    if (optind != argc - 1) {
        fprintf(stderr, "lg-eval needle: give one MODEL directory (--help for usage)\n");
        return 2;
    }
    a->o.model = argv[optind];
    if (!*a->spec.needle || !*a->spec.question || !*a->spec.answer) {
        fprintf(stderr, "lg-eval needle: --needle, --question and --answer must not be empty\n");
        return 2;
    }
    if (lg_parse_lengths(lengths, &a->lengths, &a->n_lengths, &err) != 0 ||
        lg_parse_depths(depths, &a->depths, &a->n_depths, &err) != 0) {
        fprintf(stderr, "lg-eval needle: %s\n", err.msg);
        return 2;
    }
    return 0;
}

static int needle_outputs(const needle_args *a, const lg_needle_grid *g, const char *haystack)
{
    lg_err err;
    lg_needle_grid_print(stdout, g);
    int rc = 0;
    if (a->json_out) {
        cJSON *j = lg_needle_grid_json(g, &a->spec, a->o.model, haystack);
        if (!j || lg_json_write_file(a->json_out, j, &err) != 0) {
            fprintf(stderr, "lg-eval needle: %s\n", j ? err.msg : "out of memory");
            rc = 1;
        }
        cJSON_Delete(j);
    }
    if (a->svg) {
        const char *base = strrchr(a->o.model, '/');
        char title[512];
        base = base && base[1] ? base + 1 : a->o.model;
        double sum = 0;
        int k = 0;
        for (int i = 0; i < g->n_lengths * g->n_depths; i++)
            if (!isnan(g->cells[i].s.score))
                sum += g->cells[i].s.score, k++;
        snprintf(title, sizeof title, "Needle in a haystack: %s (mean score %.2f)", base, k ? sum / k : 0.0);
        if (lg_needle_grid_svg(a->svg, g, title, &err) != 0) {
            fprintf(stderr, "lg-eval needle: %s\n", err.msg);
            rc = 1;
        }
    }
    return rc;
}

static int cmd_needle(int argc, char **argv)
{
    needle_args a = {0};
    int rc = needle_parse(argc, argv, &a);
    lg_model *m = NULL;
    lg_tokenizer *t = NULL;
    lg_engine *s = NULL;
    lg_corpus c = {0};
    lg_needle_grid g = {0};
    lg_err err;
    char hay_default[4096];
    const char *hay = a.haystack ? a.haystack : default_haystack(hay_default, sizeof hay_default);
    if (rc == 0)
        rc = load_model(&a.o, "needle", &m, &t);
    if (rc == 0) {
        warn_lengths("needle", m, a.lengths, a.n_lengths);
        long longest = max_of(a.lengths, a.n_lengths);
        lg_engine_opts eo = {.max_seq = (int)longest + 8, .tp = a.o.tp, .dtype = a.o.dtype};
        /* the corpus must hold the longest haystack with room to pick sentence boundaries */
        if (lg_corpus_load(hay, t, longest + longest / 20 + 1024, &c, &err) != 0 ||
            lg_needle_grid_init(&g, a.lengths, a.n_lengths, a.depths, a.n_depths, (int)a.max_new, &err) != 0 ||
            !(s = lg_engine_new(m, a.o.device, &eo, &err)) ||
            lg_needle_grid_run(s, t, &c, &a.spec, &g, a.o.quiet ? NULL : stderr, &err) != 0) {
            fprintf(stderr, "lg-eval needle: %s\n", err.msg);
            if (!a.haystack && strstr(err.msg, "cannot open"))
                fprintf(stderr, "lg-eval needle: give the haystack with --haystack DIR_OR_FILE\n");
            rc = 1;
        } else {
            rc = needle_outputs(&a, &g, hay);
        }
    }
    lg_needle_grid_free(&g);
    lg_corpus_free(&c);
    lg_engine_free(s);
    lg_tokenizer_free(t);
    lg_model_free(m);
    free(a.lengths);
    free(a.depths);
    return rc < 0 ? 0 : rc;
}

/* ---------------------------------------------------------------- passkey */

static const char passkey_help[] =
"usage: lg-eval passkey MODEL [--lengths 1k,2k,4k] [--trials N] [--seed S] [--json] [--plan FILE]\n"
"                       [--device cpu|cuda] [--dtype f16|bf16|f32] [--tp N]\n"
"\n"
"Pass-key retrieval (llama.cpp's passkey example, LongGen's evaluation): filler text (\"The grass is\n"
"green. ...\") repeated to fill each length, a random 5-digit key at a random filler position, then\n"
"\"What is the pass key? The pass key is\"; a trial is correct when the greedy answer is the key.\n"
"Prints the accuracy per length. --trials default 10, --seed default 1 (the same keys and positions\n"
"for the same seed). Lengths past max_position_embeddings run with a warning.\n";

static int cmd_passkey(int argc, char **argv)
{
    static const struct option longs[] = {
        {"lengths", required_argument, 0, O_LENGTHS}, {"trials", required_argument, 0, O_TRIALS},
        {"seed", required_argument, 0, O_SEED}, {"json", no_argument, 0, O_JSON},
        {"plan", required_argument, 0, O_PLAN}, {"device", required_argument, 0, O_DEVICE},
        {"tp", required_argument, 0, O_TP}, {"dtype", required_argument, 0, O_DTYPE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    run_opts o = {0};
    const char *lengths = "1k,2k,4k";
    long trials = 10, seed = 1;
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (opt) {
        case O_LENGTHS: lengths = optarg; break;
        case O_TRIALS:
            if (parse_int("--trials", optarg, 1, 1000000, &trials))
                return 2;
            break;
        case O_SEED:
            if (parse_int("--seed", optarg, 0, INT64_MAX, &seed))
                return 2;
            break;
        case O_JSON: o.json = 1; break;
        case O_PLAN: o.plan = optarg; break;
        case O_DEVICE: o.device = optarg; break;
        case O_TP:
        case O_DTYPE:
            if (parse_engine_opt(&o, opt, optarg))
                return 2;
            break;
        case 'h': fputs(passkey_help, stdout); return 0;
        default: fputs(passkey_help, stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "lg-eval passkey: give one MODEL directory (--help for usage)\n");
        return 2;
    }
    o.model = argv[optind];
    lg_err err;
    long *lens = NULL;
    int n_lens = 0;
    if (lg_parse_lengths(lengths, &lens, &n_lens, &err) != 0) {
        fprintf(stderr, "lg-eval passkey: %s\n", err.msg);
        return 2;
    }
    lg_model *m = NULL;
    lg_tokenizer *t = NULL;
    int rc = load_model(&o, "passkey", &m, &t);
    lg_engine_opts eo = {.max_seq = (int)max_of(lens, n_lens) + 8, .tp = o.tp, .dtype = o.dtype};
    lg_engine *s = rc == 0 ? lg_engine_new(m, o.device, &eo, &err) : NULL;
    if (rc == 0 && !s) {
        fprintf(stderr, "lg-eval passkey: %s\n", err.msg);
        rc = 1;
    }
    cJSON *doc = o.json ? cJSON_CreateObject() : NULL, *results = NULL;
    if (rc == 0) {
        warn_lengths("passkey", m, lens, n_lens);
        if (doc) {
            cJSON_AddStringToObject(doc, "model", o.model);
            cJSON_AddNumberToObject(doc, "trials", (double)trials);
            cJSON_AddNumberToObject(doc, "seed", (double)seed);
            results = cJSON_AddArrayToObject(doc, "results");
        } else {
            printf("%8s %8s %7s %9s %9s\n", "length", "tokens", "trials", "accuracy", "seconds");
        }
    }
    uint64_t rng = (uint64_t)seed;
    for (int i = 0; rc == 0 && i < n_lens; i++) {
        lg_passkey_result r;
        char name[24];
        if (lg_passkey_run(s, t, lens[i], (int)trials, &rng, &r, &err) != 0) {
            fprintf(stderr, "lg-eval passkey: length %ld: %s\n", lens[i], err.msg);
            rc = 1;
        } else if (results) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "length", (double)r.length);
            cJSON_AddNumberToObject(x, "prompt_tokens", (double)r.prompt_tokens);
            cJSON_AddNumberToObject(x, "trials", r.trials);
            cJSON_AddNumberToObject(x, "correct", r.correct);
            cJSON_AddNumberToObject(x, "accuracy", r.accuracy);
            cJSON_AddNumberToObject(x, "seconds", r.seconds);
            cJSON_AddItemToArray(results, x);
        } else {
            printf("%8s %8ld %7d %9.2f %9.1f\n", lg_length_name(r.length, name), r.prompt_tokens, r.trials,
                   r.accuracy, r.seconds);
            fflush(stdout);
        }
    }
    char *text = rc == 0 && doc ? cJSON_PrintUnformatted(doc) : NULL;
    if (text)
        printf("%s\n", text);
    free(text);
    cJSON_Delete(doc);
    lg_engine_free(s);
    lg_tokenizer_free(t);
    lg_model_free(m);
    free(lens);
    return rc;
}

/* ---------------------------------------------------------------- ppl --by-position */

static const char ppl_help[] =
"usage: lg-eval ppl MODEL --by-position --text FILE [--text FILE...] [--ctx N] [--buckets N]\n"
"                   [--plot FILE.svg] [--json] [--plan FILE] [--device cpu|cuda]\n"
"                   [--dtype f16|bf16|f32] [--tp N]\n"
"\n"
"The perplexity protocol of `lg-eval ppl` (each file with BOS, concatenated, windows of ctx+1 tokens\n"
"every ctx tokens; default ctx: max_position_embeddings, at most 4096) with the loss of each predicted\n"
"token added to the bucket of its position in the window: --buckets (default 16) equal ranges of\n"
"0..ctx. Prints a table and with --plot draws perplexity against context position. A model that uses\n"
"long context gets better late in the window.\n";

/* Each file tokenized with BOS, concatenated (lg-eval ppl's protocol). */
static int read_texts(const lg_tokenizer *t, char **files, int n_files, int **out, long *n_out, lg_err *err)
{
    int *all = NULL;
    long total = 0;
    for (int i = 0; i < n_files; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            free(all);
            return lg_err_set(err, "%s: cannot open: %s", files[i], strerror(errno));
        }
        size_t cap = 1 << 16, len = 0, got;
        char *b = malloc(cap);
        while (b && (got = fread(b + len, 1, cap - len, f)) > 0)
            if ((len += got) == cap) {
                char *g = realloc(b, cap *= 2);
                if (!g)
                    free(b);
                b = g;
            }
        int bad = ferror(f);
        fclose(f);
        int *ids = NULL, n = 0;
        int rc = !b || bad ? lg_err_set(err, "%s: read error", files[i])
                           : lg_tokenizer_encode(t, b, len, 1, &ids, &n, err);
        free(b);
        int *g = rc == 0 ? realloc(all, sizeof(int) * (size_t)(total + n)) : NULL;
        if (rc == 0 && !g)
            rc = lg_err_set(err, "out of memory");
        if (rc != 0) {
            free(ids);
            free(all);
            return -1;
        }
        all = g;
        memcpy(all + total, ids, sizeof(int) * (size_t)n);
        total += n;
        free(ids);
    }
    *out = all;
    *n_out = total;
    return 0;
}

static void ppl_print(const run_opts *o, const lg_ppl_positions *r, long n_tokens)
{
    if (o->json) {
        printf("{\"ctx\": %d, \"tokens\": %ld, \"windows\": %ld, \"predicted\": %ld, \"ppl\": %.6f, \"buckets\": [",
               r->ctx, n_tokens, r->windows, r->predicted, exp(r->nll_total / (double)r->predicted));
        for (int b = 0; b < r->n_buckets; b++) {
            double p = lg_ppl_bucket_ppl(r, b);
            printf("%s{\"from\": %ld, \"to\": %ld, \"predicted\": %ld, \"nll\": %.6f, \"ppl\": ", b ? ", " : "",
                   r->lo[b] + 1, r->hi[b], r->count[b], r->count[b] ? r->nll_sum[b] / (double)r->count[b] : 0.0);
            if (isnan(p))
                printf("null}");
            else
                printf("%.6f}", p);
        }
        printf("]}\n");
        return;
    }
    printf("tokens      %ld, %ld windows of ctx %d (+1), %ld predicted, ppl %.4f\n", n_tokens, r->windows, r->ctx,
           r->predicted, exp(r->nll_total / (double)r->predicted));
    printf("%8s %8s %10s %10s %10s\n", "from", "to", "predicted", "mean nll", "ppl");
    for (int b = 0; b < r->n_buckets; b++)
        printf("%8ld %8ld %10ld %10.4f %10.3f\n", r->lo[b] + 1, r->hi[b], r->count[b],
               r->count[b] ? r->nll_sum[b] / (double)r->count[b] : NAN, lg_ppl_bucket_ppl(r, b));
}

static int ppl_plot(const char *path, const char *model, const lg_ppl_positions *r, lg_err *err)
{
    double *x = malloc((size_t)r->n_buckets * sizeof *x), *y = malloc((size_t)r->n_buckets * sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return lg_err_set(err, "%s: out of memory", path);
    }
    for (int b = 0; b < r->n_buckets; b++) {
        x[b] = (r->lo[b] + 1 + r->hi[b]) / 2.0; /* the middle of the positions predicted */
        y[b] = lg_ppl_bucket_ppl(r, b);
    }
    const char *base = strrchr(model, '/');
    base = base && base[1] ? base + 1 : model;
    char title[512], name[64];
    snprintf(title, sizeof title, "Perplexity by context position: %s", base);
    snprintf(name, sizeof name, "ctx %d", r->ctx);
    lg_line_series s = {.name = name, .x = x, .y = y, .n = r->n_buckets};
    lg_line_plot p = {.title = title, .x_label = "position in the window (tokens)",
                      .y_label = "perplexity", .series = &s, .n_series = 1};
    int rc = lg_svg_line_plot_write(path, &p, err);
    free(x);
    free(y);
    return rc;
}

static int cmd_ppl_by_position(int argc, char **argv)
{
    static const struct option longs[] = {
        {"by-position", no_argument, 0, O_BY_POSITION}, {"text", required_argument, 0, O_TEXT},
        {"ctx", required_argument, 0, O_CTX}, {"buckets", required_argument, 0, O_BUCKETS},
        {"plot", required_argument, 0, O_PLOT}, {"json", no_argument, 0, O_JSON},
        {"plan", required_argument, 0, O_PLAN}, {"device", required_argument, 0, O_DEVICE},
        {"tp", required_argument, 0, O_TP}, {"dtype", required_argument, 0, O_DTYPE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    run_opts o = {0};
    char **texts = calloc((size_t)argc, sizeof *texts);
    const char *plot = NULL;
    long ctx = 0, buckets = 16;
    int n_texts = 0, opt, rc = texts ? 0 : 1;
    optind = 2;
    while (rc == 0 && (opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (opt) {
        case O_BY_POSITION: break;
        case O_TEXT: texts[n_texts++] = optarg; break;
        case O_CTX: rc = parse_int("--ctx", optarg, 1, LG_MAX_LENGTH, &ctx); break;
        case O_BUCKETS: rc = parse_int("--buckets", optarg, 1, 100000, &buckets); break;
        case O_PLOT: plot = optarg; break;
        case O_JSON: o.json = 1; break;
        case O_PLAN: o.plan = optarg; break;
        case O_DEVICE: o.device = optarg; break;
        case O_TP:
        case O_DTYPE: rc = parse_engine_opt(&o, opt, optarg); break;
        case 'h': fputs(ppl_help, stdout); rc = -1; break;
        default: fputs(ppl_help, stderr); rc = 2;
        }
    }
    if (rc == 0 && (optind != argc - 1 || n_texts == 0)) {
        fprintf(stderr, "lg-eval ppl --by-position: give one MODEL directory and --text FILE (--help for usage)\n");
        rc = 2;
    }
    lg_model *m = NULL;
    lg_tokenizer *t = NULL;
    lg_engine *s = NULL;
    int *ids = NULL;
    long n = 0;
    lg_err err;
    if (rc == 0) {
        o.model = argv[optind];
        rc = load_model(&o, "ppl", &m, &t);
    }
    if (rc == 0) {
        if (ctx == 0)
            ctx = m->max_pos < 4096 ? m->max_pos : 4096;
        long lens[1] = {ctx};
        warn_lengths("ppl", m, lens, 1);
        if (buckets > ctx)
            buckets = ctx;
        lg_engine_opts eo = {.max_seq = (int)ctx + 1, .tp = o.tp, .dtype = o.dtype};
        lg_ppl_positions r;
        if (read_texts(t, texts, n_texts, &ids, &n, &err) != 0 || !(s = lg_engine_new(m, o.device, &eo, &err)) ||
            lg_ppl_by_position(s, ids, n, (int)ctx, (int)buckets, 1, &r, &err) != 0) {
            fprintf(stderr, "lg-eval ppl: %s\n", err.msg);
            rc = 1;
        } else {
            ppl_print(&o, &r, n);
            if (plot && ppl_plot(plot, o.model, &r, &err) != 0) {
                fprintf(stderr, "lg-eval ppl: %s\n", err.msg);
                rc = 1;
            }
            lg_ppl_positions_free(&r);
        }
    }
    free(ids);
    lg_engine_free(s);
    lg_tokenizer_free(t);
    lg_model_free(m);
    free(texts);
    return rc < 0 ? 0 : rc;
}

/* ---------------------------------------------------------------- dispatch */

int lg_long_eval_handles(int argc, char **argv)
{
    if (argc < 2)
        return 0;
    if (strcmp(argv[1], "needle") == 0 || strcmp(argv[1], "passkey") == 0)
        return 1;
    if (strcmp(argv[1], "ppl") != 0)
        return 0;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--by-position") == 0)
            return 1;
    return 0;
}

int lg_long_eval_main(int argc, char **argv)
{
    if (strcmp(argv[1], "needle") == 0)
        return cmd_needle(argc, argv);
    if (strcmp(argv[1], "passkey") == 0)
        return cmd_passkey(argc, argv);
    return cmd_ppl_by_position(argc, argv);
}
