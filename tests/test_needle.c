/* Long-context evaluations: the needle-in-a-haystack construction (length, depth), the scoring, the
 * grid's JSON and heatmap, the pass-key prompt against the fixtures' own ids, pass-key retrieval on
 * the bundled LongGen model with and without its full layers, ppl by position, and the tools. */
#include <CUnit/CUnit.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "engine.h"
#include "json_file.h"
#include "long_eval_cli.h"
#include "model.h"
#include "needle.h"
#include "passkey.h"
#include "perplexity.h"
#include "plot_svg.h"
#include "ppl_position.h"
#include "test_env.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------- fixtures, loaded once */

static lg_tokenizer *tok;
static lg_corpus essays;

static int suite_init(void)
{
    char path[4096];
    lg_err err;
    tok = lg_tokenizer_load(lg_fixture(path, sizeof path, "llama2-tokenizer/tokenizer.model"), &err);
    if (!tok || lg_corpus_load(lg_fixture(path, sizeof path, "text/pg-essays"), tok, 0, &essays, &err) != 0) {
        fprintf(stderr, "\n  needle suite: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    lg_corpus_free(&essays);
    lg_tokenizer_free(tok);
    return 0;
}

static long n_tokens(const char *s, size_t n)
{
    int *ids = NULL, k = 0;
    lg_err err;
    if (lg_tokenizer_encode(tok, s, n, 0, &ids, &k, &err) != 0)
        return -1;
    free(ids);
    return k;
}

/* splitmix64, for reproducible random test inputs */
static uint64_t rnd(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The bundled default model (models/kjv-tiny-longgen) converted with its plan and RoPE kept. */
static const char *tiny_longgen(void)
{
    static char out[4200];
    if (out[0])
        return out;
    char src[4096], plan[4200];
    snprintf(src, sizeof src, "%s/models/kjv-tiny-longgen", LG_SOURCE_DIR);
    snprintf(plan, sizeof plan, "%s/longgen_plan.json", src);
    snprintf(out, sizeof out, "%s/kjv-tiny-longgen-lg", lg_test_tmpdir());
    lg_convert_opts o = {.src_dir = src, .out_dir = out, .quiet = 1};
    o.plan.plan_file = plan;
    o.plan.rope = "keep";
    lg_err err;
    if (lg_convert_run(&o, NULL, &err) != 0) {
        fprintf(stderr, "\n  %s\n", err.msg);
        out[0] = 0;
        return NULL;
    }
    return out;
}

/* ---------------------------------------------------------------- parsing */

static void test_lengths_and_depths_are_parsed(void)
{
    long *v = NULL;
    double *d = NULL;
    int n = 0;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_parse_lengths("1k,2k,4k,128k,4096,1.5k,1m", &v, &n, &err), 0);
    long want[] = {1024, 2048, 4096, 131072, 4096, 1536, 1048576};
    CU_ASSERT_EQUAL_FATAL(n, 7);
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(v[i], want[i]);
    free(v);
    const char *bad[] = {"", "0", "abc", "1q", "-5", "0.3k", "1k,,x", "64m"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(lg_parse_lengths(bad[i], &v, &n, &err), -1);
        CU_ASSERT(strstr(err.msg, "length") != NULL);
    }
    CU_ASSERT_EQUAL_FATAL(lg_parse_depths("0,10,...,100", &d, &n, &err), 0);
    CU_ASSERT_EQUAL_FATAL(n, 11);
    for (int i = 0; i < n; i++)
        CU_ASSERT(fabs(d[i] - 10.0 * i) < 1e-9);
    free(d);
    CU_ASSERT_EQUAL_FATAL(lg_parse_depths("0, 33.3, 100", &d, &n, &err), 0);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT(fabs(d[1] - 33.3) < 1e-12);
    free(d);
    CU_ASSERT_EQUAL(lg_parse_depths("101", &d, &n, &err), -1);
    CU_ASSERT(strstr(err.msg, "0..100") != NULL);
    CU_ASSERT_EQUAL(lg_parse_depths("0,...,50", &d, &n, &err), -1);
    CU_ASSERT(strstr(err.msg, "two depths before it") != NULL);
    CU_ASSERT_EQUAL(lg_parse_depths("50,40,...,100", &d, &n, &err), -1);
    CU_ASSERT(strstr(err.msg, "increasing") != NULL);
}

/* ---------------------------------------------------------------- haystack */

static void test_sentences_end_at_terminators_and_glued_paragraphs(void)
{
    const char *text = "July 2010What hard liquor costs 3.5 dollars in the U.S.A today.  It is (sad.) "
                       "Really?! \"Yes.\" It accelerated.We would not stop it.\n\nA heading\n\nLast words";
    const char *want[] = {"July 2010What hard liquor costs 3.5 dollars in the U.S.A today.", "It is (sad.)",
                          "Really?!", "\"Yes.\"", "It accelerated.", "We would not stop it.", "A heading",
                          "Last words"};
    lg_corpus c;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_corpus_from_text(text, strlen(text), "text", tok, 0, &c, &err), 0);
    CU_ASSERT_EQUAL(c.n_sent, 8);
    for (long k = 0; k < c.n_sent && k < 8; k++) {
        size_t n = c.sent_end[k] - c.sent_start[k];
        if (n != strlen(want[k]) || memcmp(c.text + c.sent_start[k], want[k], n) != 0)
            fprintf(stderr, "\n  sentence %ld: '%.*s'\n", k, (int)n, c.text + c.sent_start[k]);
        CU_ASSERT(n == strlen(want[k]) && memcmp(c.text + c.sent_start[k], want[k], n) == 0);
    }
    /* the token map: sentence k's tokens, counted from it, match its own encoding give or take the
     * one token where it meets its neighbours */
    for (long k = 0; k < c.n_sent; k++) {
        long own = n_tokens(c.text + c.sent_start[k], c.sent_end[k] - c.sent_start[k]);
        CU_ASSERT(labs(own - (c.tok_end[k] - c.tok_first[k])) <= 1);
    }
    lg_corpus_free(&c);
    /* bad inputs: invalid UTF-8 is made '?', whitespace only is refused */
    CU_ASSERT_EQUAL_FATAL(lg_corpus_from_text("Bad\xff" "byte. Ok.", 13, "bytes", tok, 0, &c, &err), 0);
    CU_ASSERT_STRING_EQUAL(c.text, "Bad?byte. Ok.");
    CU_ASSERT_EQUAL(c.n_sent, 2);
    lg_corpus_free(&c);
    CU_ASSERT_EQUAL(lg_corpus_from_text(" \n\n ", 4, "blank.txt", tok, 0, &c, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, "blank.txt: no text");
}

/* ±1% is the requirement; the cut is at whole sentences and the count is of the haystack
 * encoded on its own. Lengths random in 100..12000 plus fixed ones; then a short text repeated. */
static void test_haystack_length_in_tokens_is_within_one_percent(void)
{
    long lens[12] = {100, 1000, 4000};
    uint64_t seed = 7;
    for (int i = 3; i < 12; i++)
        lens[i] = 100 + (long)(rnd(&seed) % 11900);
    lg_err err;
    for (int i = 0; i < 12; i++) {
        lg_haystack h;
        CU_ASSERT_EQUAL_FATAL(lg_haystack_cut(&essays, tok, lens[i], &h, &err), 0);
        long got = n_tokens(h.text, h.len);
        if (labs(got - lens[i]) > lens[i] / 100)
            fprintf(stderr, "\n  asked %ld tokens, got %ld\n", lens[i], got);
        CU_ASSERT(labs(got - lens[i]) <= lens[i] / 100);
        CU_ASSERT_EQUAL(h.n_tokens, got);
        /* whole sentences: it starts where one starts and ends where one ends */
        CU_ASSERT_EQUAL(essays.text + essays.sent_start[h.first_sent], strstr(essays.text, h.text));
        CU_ASSERT_EQUAL(h.cut[h.n_sent], h.len);
        lg_haystack_free(&h);
    }
    /* the corpus repeats itself when asked for more than it has */
    lg_corpus small;
    const char *text = "One sentence here. Another one there. A third and last one.";
    CU_ASSERT_EQUAL_FATAL(lg_corpus_from_text(text, strlen(text), "small", tok, 500, &small, &err), 0);
    CU_ASSERT(small.n_tokens >= 500);
    lg_haystack h;
    CU_ASSERT_EQUAL_FATAL(lg_haystack_cut(&small, tok, 300, &h, &err), 0);
    CU_ASSERT(labs(n_tokens(h.text, h.len) - 300) <= 3);
    lg_haystack_free(&h);
    CU_ASSERT_EQUAL(lg_haystack_cut(&small, tok, 100000, &h, &err), -1);
    CU_ASSERT(strstr(err.msg, "fewer than the 100000 asked for") != NULL);
    CU_ASSERT_EQUAL(lg_haystack_cut(&small, tok, 0, &h, &err), -1);
    lg_corpus_free(&small);
}

/* The needle goes in at the cut nearest the depth: the tokens before it (counted by encoding the
 * text before it) are within one sentence of depth x length, the sentence on either side of the
 * cut, plus one token where the encodings of the two parts meet. */
static void test_needle_is_inserted_at_the_asked_depth_within_a_sentence(void)
{
    lg_haystack h;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_haystack_cut(&essays, tok, 3000, &h, &err), 0);
    const char *needle = "\nThe best thing to do in San Francisco is eat a sandwich.\n";
    double depths[] = {0, 7, 10, 25, 33.3, 50, 61, 75, 90, 99, 100};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        long k = lg_haystack_cut_at_depth(&h, depths[i]);
        size_t len = 0;
        char *s = lg_haystack_insert(&h, k, needle, &len, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        const char *at = strstr(s, needle);
        CU_ASSERT_PTR_NOT_NULL_FATAL(at);
        size_t off = (size_t)(at - s);
        CU_ASSERT_EQUAL(off, h.cut[k]);
        /* the haystack around it is intact, and the needle follows a sentence's end */
        CU_ASSERT(memcmp(s, h.text, off) == 0 && strcmp(at + strlen(needle), h.text + off) == 0);
        CU_ASSERT(off == 0 || !strchr(" \n\t\r", s[off - 1])); /* just after a sentence's last character */
        long before = n_tokens(s, off), target = lround(depths[i] / 100 * (double)h.n_tokens);
        long prev = k > 0 ? n_tokens(h.text + h.cut[k - 1], h.cut[k] - h.cut[k - 1]) : 0;
        long next = k < h.n_sent ? n_tokens(h.text + h.cut[k], h.cut[k + 1] - h.cut[k]) : 0;
        long slack = (prev > next ? prev : next) + 1;
        if (labs(before - target) > slack)
            fprintf(stderr, "\n  depth %g: %ld tokens before the needle, wanted %ld +- %ld\n", depths[i],
                    before, target, slack);
        CU_ASSERT(labs(before - target) <= slack);
        if (depths[i] == 0)
            CU_ASSERT_EQUAL(off, 0);
        if (depths[i] == 100)
            CU_ASSERT_EQUAL(off, h.len);
        free(s);
    }
    size_t len;
    CU_ASSERT_PTR_NULL(lg_haystack_insert(&h, h.n_sent + 1, needle, &len, &err));
    CU_ASSERT(strstr(err.msg, "outside the haystack") != NULL);
    lg_haystack_free(&h);
}

/* ---------------------------------------------------------------- scoring */

static void test_answers_are_scored_by_containment_and_word_overlap(void)
{
    const char *answer = "eat a sandwich and sit in Dolores Park"; /* 8 words */
    static const struct {
        const char *output;
        int contains;
        double overlap;
    } cases[] = {
        {"eat a sandwich and sit in Dolores Park on a sunny day.", 1, 1.0},
        {"  Eat a  sandwich and\nsit in DOLORES park", 1, 1.0},
        {"eat a sandwich", 0, 3.0 / 8},
        {"park dolores in sit and sandwich a eat", 0, 1.0},
        {"And the Lord spake unto Moses", 0, 1.0 / 8}, /* "and" */
        {"", 0, 0.0},
        {"eat eat eat eat", 0, 1.0 / 8}, /* each answer word counts once */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lg_needle_score s = lg_needle_score_answer(cases[i].output, answer);
        CU_ASSERT_EQUAL(s.contains, cases[i].contains);
        CU_ASSERT(fabs(s.overlap - cases[i].overlap) < 1e-12);
        CU_ASSERT(fabs(s.score - (cases[i].contains + cases[i].overlap) / 2) < 1e-12);
    }
    /* repeated answer words need as many in the output */
    lg_needle_score s = lg_needle_score_answer("a b", "a a b");
    CU_ASSERT(fabs(s.overlap - 2.0 / 3) < 1e-12);
    s = lg_needle_score_answer("anything", "");
    CU_ASSERT_EQUAL(s.contains, 0);
    CU_ASSERT_EQUAL(s.overlap, 0.0);
}

/* ---------------------------------------------------------------- outputs */

/* A grid filled by hand (outputs and scores random), as lg_needle_grid_run leaves it. */
static void fake_grid(lg_needle_grid *g, int nl, int nd, uint64_t seed)
{
    long lengths[8];
    double depths[8];
    for (int i = 0; i < nl; i++)
        lengths[i] = 256L << i;
    for (int i = 0; i < nd; i++)
        depths[i] = nd > 1 ? 100.0 * i / (nd - 1) : 50;
    lg_err err;
    CU_ASSERT_EQUAL_FATAL(lg_needle_grid_init(g, lengths, nl, depths, nd, 16, &err), 0);
    for (int i = 0; i < nl * nd - 1; i++) { /* the last cell stays unscored */
        lg_needle_cell *c = &g->cells[i];
        c->output = strdup(rnd(&seed) % 2 ? "eat a sandwich \"quoted\" <&>" : "no idea");
        c->s.contains = (int)(rnd(&seed) % 2);
        c->s.overlap = (double)(rnd(&seed) % 1000) / 1000;
        c->s.score = (c->s.contains + c->s.overlap) / 2;
        c->prompt_tokens = c->length - 20;
        c->haystack_tokens = c->length - 80;
    }
}

static void test_grid_json_has_the_documented_schema(void)
{
    lg_needle_grid g;
    fake_grid(&g, 3, 5, 11);
    lg_needle_spec spec = lg_needle_default_spec();
    cJSON *j = lg_needle_grid_json(&g, &spec, "models/x", "essays");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    lg_err err;
    cJSON *back = lg_json_parse(text, strlen(text), "grid.json", &err);
    free(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    const char *strings[] = {"model", "haystack", "needle", "question", "answer", "answer_prefix"};
    for (int i = 0; i < 6; i++)
        CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(back, strings[i])));
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(back, "needle")->valuestring, spec.needle);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(back, "lengths")), 3);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(back, "depths")), 5);
    CU_ASSERT_EQUAL(cJSON_GetObjectItem(back, "max_new")->valueint, 16);
    CU_ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(back, "mean_score")));
    cJSON *cells = cJSON_GetObjectItem(back, "cells");
    CU_ASSERT_EQUAL_FATAL(cJSON_GetArraySize(cells), 15);
    const char *numbers[] = {"length", "depth", "haystack_tokens", "prompt_tokens", "needle_token",
                             "needle_depth", "seconds"};
    for (int i = 0; i < 15; i++) {
        cJSON *c = cJSON_GetArrayItem(cells, i);
        for (int k = 0; k < 7; k++)
            CU_ASSERT(cJSON_IsNumber(cJSON_GetObjectItem(c, numbers[k])));
        CU_ASSERT(cJSON_IsString(cJSON_GetObjectItem(c, "output")));
        CU_ASSERT(cJSON_IsBool(cJSON_GetObjectItem(c, "contains")));
        /* depth-major: cell i is depth i / 3, length i % 3 */
        CU_ASSERT_EQUAL(cJSON_GetObjectItem(c, "length")->valuedouble, (double)g.lengths[i % 3]);
        CU_ASSERT_EQUAL(cJSON_GetObjectItem(c, "depth")->valuedouble, g.depths[i / 3]);
        if (i < 14) {
            CU_ASSERT(fabs(cJSON_GetObjectItem(c, "score")->valuedouble - g.cells[i].s.score) < 1e-12);
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(c, "output")->valuestring, g.cells[i].output);
        } else { /* a cell not run has no score */
            CU_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(c, "score")));
        }
    }
    cJSON_Delete(back);
    lg_needle_grid_free(&g);
    /* bad grids are refused */
    long len = 256;
    double depth = 120;
    CU_ASSERT_EQUAL(lg_needle_grid_init(&g, &len, 1, &depth, 1, 8, &err), -1);
    CU_ASSERT(strstr(err.msg, "depth 120 is outside 0..100") != NULL);
    depth = 50;
    CU_ASSERT_EQUAL(lg_needle_grid_init(&g, &len, 1, &depth, 1, 0, &err), -1);
    CU_ASSERT(strstr(err.msg, "max_new") != NULL);
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

static void test_svg_pictures_are_written_whole(void)
{
    char path[4200];
    lg_err err;
    const int shapes[][2] = {{3, 5}, {1, 1}, {7, 8}};
    for (int i = 0; i < 3; i++) {
        lg_needle_grid g;
        fake_grid(&g, shapes[i][0], shapes[i][1], 5 + (uint64_t)i);
        snprintf(path, sizeof path, "%s/heat.svg", lg_test_tmpdir());
        CU_ASSERT_EQUAL_FATAL(lg_needle_grid_svg(path, &g, "Needle <test> & co", &err), 0);
        size_t n;
        char *svg = lg_read_file(path, &n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(svg);
        CU_ASSERT(strncmp(svg, "<svg", 4) == 0);
        CU_ASSERT(n > 7 && strcmp(svg + n - 7, "</svg>\n") == 0);
        CU_ASSERT_EQUAL(count_of(svg, "class=\"cell\""), shapes[i][0] * shapes[i][1]);
        CU_ASSERT_EQUAL(count_of(svg, "<title>"), count_of(svg, "</title>"));
        CU_ASSERT_EQUAL(count_of(svg, "<text"), count_of(svg, "</text>"));
        CU_ASSERT_PTR_NOT_NULL(strstr(svg, "Needle &lt;test&gt; &amp; co")); /* escaped */
        CU_ASSERT_PTR_NOT_NULL(strstr(svg, "context length (tokens)"));
        CU_ASSERT_PTR_NOT_NULL(strstr(svg, "needle depth"));
        CU_ASSERT_PTR_NOT_NULL(strstr(svg, "class=\"legend\""));
        CU_ASSERT_PTR_NOT_NULL(strstr(svg, "#cccccc")); /* the unscored cell */
        char partial[4300];
        snprintf(partial, sizeof partial, "%s.partial", path);
        CU_ASSERT_FALSE(lg_path_exists(partial));
        free(svg);
        lg_needle_grid_free(&g);
    }
    /* the colour scale's ends and middle are gkamradt's colours */
    char col[8];
    lg_svg_score_colour(0, col);
    CU_ASSERT_STRING_EQUAL(col, "#f0496e");
    lg_svg_score_colour(0.5, col);
    CU_ASSERT_STRING_EQUAL(col, "#ebb839");
    lg_svg_score_colour(1, col);
    CU_ASSERT_STRING_EQUAL(col, "#0cd79f");
    /* a line plot: one polyline, a marker per finite point */
    double x[6] = {1, 2, 3, 4, 5, 6}, y[6] = {300, 250, NAN, 240, 238, 230};
    lg_line_series s = {.name = "ctx 1024", .x = x, .y = y, .n = 6};
    lg_line_plot p = {.title = "ppl", .x_label = "position", .y_label = "perplexity", .series = &s, .n_series = 1};
    snprintf(path, sizeof path, "%s/line.svg", lg_test_tmpdir());
    CU_ASSERT_EQUAL_FATAL(lg_svg_line_plot_write(path, &p, &err), 0);
    size_t n;
    char *svg = lg_read_file(path, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(svg);
    CU_ASSERT(strncmp(svg, "<svg", 4) == 0);
    CU_ASSERT_EQUAL(count_of(svg, "<polyline"), 1);
    CU_ASSERT_EQUAL(count_of(svg, "class=\"point\""), 5);
    free(svg);
    /* bad inputs: nothing to plot, an unwritable place */
    double nan1[1] = {NAN};
    lg_line_series empty = {.x = nan1, .y = nan1, .n = 1};
    p.series = &empty;
    CU_ASSERT_EQUAL(lg_svg_line_plot_write(path, &p, &err), -1);
    CU_ASSERT(strstr(err.msg, "nothing to plot") != NULL);
    lg_needle_grid g;
    fake_grid(&g, 2, 2, 1);
    CU_ASSERT_EQUAL(lg_needle_grid_svg("/nonexistent/dir/heat.svg", &g, "t", &err), -1);
    CU_ASSERT(strstr(err.msg, "/nonexistent/dir/heat.svg.partial: cannot create") != NULL);
    lg_needle_grid_free(&g);
}

/* ---------------------------------------------------------------- pass key */

static int id_list(const cJSON *a, int *out, int cap)
{
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) if (n < cap) out[n++] = x->valueint;
    return n;
}

/* The fixtures were finetuned on exactly these prompts: our construction reproduces the ids of all
 * 12 cases of passkey-reference.json (lengths 499-4075, depths 0, 0.5, 1), with the fillers for a
 * length computed as lg_passkey_fillers does and the needle after round(depth x fillers) of them. */
static void test_passkey_prompt_reproduces_the_fixture_ids(void)
{
    char path[4096];
    lg_err err;
    cJSON *ref = lg_json_read_file(lg_fixture(path, sizeof path, "kjv-tiny-longgen/passkey-reference.json"),
                                   1 << 26, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    cJSON *cases = cJSON_GetObjectItem(ref, "cases"), *c;
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cases), 12);
    int *want = malloc(sizeof(int) * 8192);
    long intro_tokens = n_tokens(LG_PASSKEY_INTRO, strlen(LG_PASSKEY_INTRO)) + 1; /* + BOS */
    char *none = lg_passkey_text(0, 0, 12345), *one = lg_passkey_text(1, 0, 12345);
    long filler_tokens = n_tokens(one, strlen(one)) - n_tokens(none, strlen(none));
    free(none);
    free(one);
    cJSON_ArrayForEach(c, cases)
    {
        long length = (long)cJSON_GetObjectItem(c, "length")->valuedouble;
        double depth = cJSON_GetObjectItem(c, "depth")->valuedouble;
        int key = cJSON_GetObjectItem(c, "key")->valueint;
        int n_want = id_list(cJSON_GetObjectItem(c, "prompt_ids"), want, 8192);
        long n_fill = lg_passkey_fillers(tok, length, &err);
        long at = lround(depth * (double)n_fill);
        int *ids = NULL, n = 0, key_pos = -1;
        CU_ASSERT_EQUAL_FATAL(lg_passkey_prompt(tok, n_fill, at, key, &ids, &n, &key_pos, &err), 0);
        CU_ASSERT_EQUAL(n, length);
        CU_ASSERT(n == n_want && memcmp(ids, want, sizeof(int) * (size_t)n) == 0);
        /* the key sits where asked: after the intro and `at` fillers, " The pass key is" then it */
        CU_ASSERT_EQUAL(key_pos, intro_tokens + at * filler_tokens + 4);
        char *digits = lg_tokenizer_decode(tok, ids + key_pos, 6, &err);
        char k[16];
        snprintf(k, sizeof k, " %d", key);
        CU_ASSERT(digits && strcmp(digits, k + 1) == 0); /* decode drops the leading space */
        free(digits);
        free(ids);
    }
    free(want);
    cJSON_Delete(ref);
    /* bad inputs */
    int *ids = NULL, n = 0;
    CU_ASSERT_EQUAL(lg_passkey_prompt(tok, 10, 3, 1234, &ids, &n, NULL, &err), -1);
    CU_ASSERT(strstr(err.msg, "not 5 digits") != NULL);
    CU_ASSERT_EQUAL(lg_passkey_prompt(tok, 10, 11, 12345, &ids, &n, NULL, &err), -1);
    CU_ASSERT(strstr(err.msg, "bad position") != NULL);
    CU_ASSERT_EQUAL(lg_passkey_fillers(tok, 60, &err), -1);
    CU_ASSERT(strstr(err.msg, "too short") != NULL);
}

/* kjv-tiny-longgen's PROVENANCE: pass key 1.00 at 1K-4K with its plan; with every layer
 * sink_window (sink 16, window 256) 0.25 / 0.15 / 0.10 at 1K / 2K / 4K over evenly spaced depths,
 * which is exactly the depths whose key lies in the last 256 tokens, where the window still sees it.
 * So: with the plan, 8 random trials at 1K expect 8 (allowed 7); at 2K with the key at depths 0-75%
 * (>= 480 tokens before the question) the plan expects 8 of 8 (allowed 7) and every-layer-sparse 0
 * of 8 (allowed 1: a lucky guess of 5 digits is ~1e-5, so more than one would mean the sparse
 * layers see past their window). Greedy float32 decoding is deterministic, so these cannot flake;
 * the margins only absorb a future change of summation order. */
static void test_passkey_found_with_the_plan_and_missed_with_every_layer_sparse(void)
{
    const char *dir = tiny_longgen();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    lg_err err;
    lg_model *m = lg_engine_load_model(dir, "cpu", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_tokenizer *t = lg_tokenizer_load(dir, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    lg_engine_opts eo = {.max_seq = 2100};
    lg_engine *e = lg_engine_new(m, "cpu", &eo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    uint64_t rng = 2024;
    lg_passkey_result r;
    CU_ASSERT_EQUAL_FATAL(lg_passkey_run(e, t, 1024, 8, &rng, &r, &err), 0);
    CU_ASSERT_EQUAL(r.trials, 8);
    CU_ASSERT(r.prompt_tokens <= 1024 && r.prompt_tokens > 1024 - 24);
    if (r.correct < 8)
        fprintf(stderr, "\n  plan, 1k: %d of 8\n", r.correct);
    CU_ASSERT(r.correct >= 7);

    const long n_fill = lg_passkey_fillers(t, 2048, &err);
    int found_plan = 0, found_sparse = 0;
    rng = 99; /* the same keys for both plans */
    for (int i = 0; i < 8; i++) {
        int ok = 0, key = 10000 + (int)(rnd(&rng) % 90000);
        long at = lround(0.75 * (double)n_fill * i / 7);
        CU_ASSERT_EQUAL_FATAL(lg_passkey_trial(e, t, n_fill, at, key, &ok, NULL, &err), 0);
        found_plan += ok;
    }
    lg_engine_free(e);
    lg_layer_attn *sparse = calloc((size_t)m->n_layers, sizeof *sparse);
    for (int l = 0; l < m->n_layers; l++)
        sparse[l] = (lg_layer_attn){.kind = LG_ATTN_SINK_WINDOW, .sink = 16, .window = 256};
    CU_ASSERT_EQUAL_FATAL(lg_model_set_layers(m, sparse, &err), 0);
    free(sparse);
    e = lg_engine_new(m, "cpu", &eo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    rng = 99;
    for (int i = 0; i < 8; i++) {
        int ok = 0, key = 10000 + (int)(rnd(&rng) % 90000);
        long at = lround(0.75 * (double)n_fill * i / 7);
        char out[32];
        CU_ASSERT_EQUAL_FATAL(lg_passkey_trial(e, t, n_fill, at, key, &ok, out, &err), 0);
        found_sparse += ok;
    }
    if (found_plan < 8 || found_sparse > 0)
        fprintf(stderr, "\n  2k, depths 0-75%%: plan %d of 8, every layer sparse %d of 8\n", found_plan,
                found_sparse);
    CU_ASSERT(found_plan >= 7);
    CU_ASSERT(found_sparse <= 1);
    lg_engine_free(e);
    lg_tokenizer_free(t);
    lg_model_free(m);
}

/* ---------------------------------------------------------------- ppl by position */

/* The buckets split the same losses lg_ppl_run sums: counts add up to the tokens predicted and the
 * overall perplexity agrees to 1e-9 (the same float losses, summed in a different order in double).
 * Early positions (little context) have the highest loss of any trained model. */
static void test_ppl_by_position_buckets_add_up_to_the_perplexity(void)
{
    const char *dir = tiny_longgen();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    lg_err err;
    lg_model *m = lg_engine_load_model(dir, "cpu", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    lg_engine_opts eo = {.max_seq = 1025};
    lg_engine *e = lg_engine_new(m, "cpu", &eo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    int *ids = NULL, n = 0;
    /* two windows of 1024 and part of a third, from the essays */
    CU_ASSERT_EQUAL_FATAL(lg_tokenizer_encode(tok, essays.text, 12000, 1, &ids, &n, &err), 0);
    CU_ASSERT_FATAL(n > 2100);
    lg_ppl_positions r;
    CU_ASSERT_EQUAL_FATAL(lg_ppl_by_position(e, ids, n, 1024, 8, 0, &r, &err), 0);
    lg_ppl_result p;
    CU_ASSERT_EQUAL_FATAL(lg_ppl_run(e, ids, n, 1024, 0, &p, &err), 0);
    long total = 0;
    for (int b = 0; b < 8; b++) {
        total += r.count[b];
        CU_ASSERT_EQUAL(r.hi[b] - r.lo[b], 128);
    }
    CU_ASSERT_EQUAL(total, n - 1);
    CU_ASSERT_EQUAL(r.predicted, p.predicted);
    CU_ASSERT(fabs(exp(r.nll_total / r.predicted) - p.ppl) <= 1e-9 * p.ppl);
    CU_ASSERT(lg_ppl_bucket_ppl(&r, 0) > lg_ppl_bucket_ppl(&r, 7));
    lg_ppl_positions_free(&r);
    CU_ASSERT_EQUAL(lg_ppl_by_position(e, ids, n, 1024, 0, 0, &r, &err), -1);
    CU_ASSERT(strstr(err.msg, "buckets must be in 1..ctx") != NULL);
    CU_ASSERT_EQUAL(lg_ppl_by_position(e, ids, 1, 1024, 4, 0, &r, &err), -1);
    free(ids);
    lg_engine_free(e);
    lg_model_free(m);
}

/* ---------------------------------------------------------------- the tools */

/* The whole default grid on kjv-pg-llama (3 lengths x 5 depths) through lg-eval: within a few
 * minutes on 2 cores (5 s of CPU measured, 16 s wall on a loaded machine), the table, the JSON and the
 * heatmap. Each prompt plus max_new answer tokens fits its length (1k is the model's context), and
 * falls short of it by at most the 2% + 4 tokens that lg_needle_haystack_tokens and the haystack's
 * ±1% take away. */
static void test_needle_grid_runs_end_to_end_on_kjv_pg_llama(void)
{
    char eval[4096], model[4096], cmd[16384], out[16384], json[4200], svg[4200];
    const char *tmp = lg_test_tmpdir();
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(model, sizeof model, "kjv-pg-llama");
    snprintf(json, sizeof json, "%s/grid.json", tmp);
    snprintf(svg, sizeof svg, "%s/grid.svg", tmp);
    setenv("LG_FIXTURES", lg_fixtures_dir(), 1); /* the default haystack is found through it */
    snprintf(cmd, sizeof cmd, "%s needle '%s' --lengths 256,512,1k --depths 0,25,50,75,100 "
             "--json-out '%s' --svg '%s' --quiet", eval, model, json, svg);
    int rc = lg_run_capture(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "\n  %s\n", out);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "depth \\ length"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "mean score"));
    CU_ASSERT_PTR_NULL(strstr(out, "warning")); /* 1k is kjv-pg-llama's context */
    lg_err err;
    cJSON *g = lg_json_read_file(json, 1 << 24, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    cJSON *cells = cJSON_GetObjectItem(g, "cells"), *c;
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cells), 15);
    int max_new = cJSON_GetObjectItem(g, "max_new")->valueint;
    cJSON_ArrayForEach(c, cells)
    {
        double length = cJSON_GetObjectItem(c, "length")->valuedouble;
        double prompt = cJSON_GetObjectItem(c, "prompt_tokens")->valuedouble;
        double depth = cJSON_GetObjectItem(c, "depth")->valuedouble;
        double landed = cJSON_GetObjectItem(c, "needle_depth")->valuedouble;
        double hay = cJSON_GetObjectItem(c, "haystack_tokens")->valuedouble;
        CU_ASSERT(prompt + max_new <= length);
        CU_ASSERT(prompt + max_new >= length - ceil(2 * hay / 100) - 4);
        /* the sentences around these cuts are under 60 tokens (the essays' mean is 24); the unit test
         * above pins the depth for any haystack */
        CU_ASSERT(fabs(landed - depth) <= 100 * 60 / hay);
        double score = cJSON_GetObjectItem(c, "score")->valuedouble;
        CU_ASSERT(score >= 0 && score <= 1);
    }
    cJSON_Delete(g);
    size_t n;
    char *pic = lg_read_file(svg, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pic);
    CU_ASSERT(strncmp(pic, "<svg", 4) == 0);
    CU_ASSERT_EQUAL(count_of(pic, "class=\"cell\""), 15);
    free(pic);
}

static void test_long_eval_tools_run_and_refuse_bad_input(void)
{
    char eval[4096], model[4096], cmd[16384], out[16384], plot[4200], text[4200], empty[4200];
    const char *dir = tiny_longgen();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    const char *tmp = lg_test_tmpdir();
    setenv("LG_FIXTURES", lg_fixtures_dir(), 1); /* the default haystack is found through it */
    lg_tool(eval, sizeof eval, "lg-eval");
    lg_fixture(model, sizeof model, "kjv-pg-llama");
    lg_fixture(text, sizeof text, "text/pg-essays/gap.txt");
    /* passkey: a table row per length */
    snprintf(cmd, sizeof cmd, "%s passkey '%s' --lengths 512,1k --trials 2 --seed 3", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "accuracy"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "     512 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "      1k "));
    snprintf(cmd, sizeof cmd, "%s passkey '%s' --lengths 512 --trials 1 --json", eval, dir);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    lg_err err;
    cJSON *j = lg_json_parse(out, strlen(out), "passkey --json", &err);
    CU_ASSERT_PTR_NOT_NULL(j);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItem(j, "results")), 1);
    cJSON_Delete(j);
    /* a length past max_position_embeddings runs, with a warning */
    snprintf(cmd, sizeof cmd, "%s needle '%s' --haystack '%s' --lengths 1100 --depths 50 --max-new 4 --quiet",
             eval, model, text);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "warning: length 1100 is past the model's max_position_embeddings (1024)"));
    /* ppl --by-position: table and plot */
    snprintf(plot, sizeof plot, "%s/ppl.svg", tmp);
    snprintf(cmd, sizeof cmd, "%s ppl '%s' --by-position --text '%s' --ctx 512 --buckets 4 --plot '%s'", eval,
             dir, text, plot);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "mean nll"));
    size_t n;
    char *svg = lg_read_file(plot, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(svg);
    CU_ASSERT_EQUAL(count_of(svg, "class=\"point\""), 4);
    free(svg);
    /* help */
    snprintf(cmd, sizeof cmd, "%s needle --help", eval);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--haystack"));
    snprintf(cmd, sizeof cmd, "%s --help", eval);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "lg-eval needle") && strstr(out, "lg-eval passkey") && strstr(out, "--by-position"));
    /* bad input: a clear message, exit 2 for usage and 1 for what fails */
    snprintf(empty, sizeof empty, "%s/empty", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", empty);
    CU_ASSERT_EQUAL(lg_run_capture(cmd, out, sizeof out), 0);
    static const struct {
        const char *args;
        int status;
        const char *msg;
    } bad[] = {
        {"needle MODEL --lengths 0", 2, "length '0' must be"},
        {"needle MODEL --depths 150", 2, "'150' is not a percentage"},
        {"needle MODEL --haystack /nonexistent", 1, "/nonexistent: cannot open"},
        {"needle MODEL --haystack EMPTY", 1, "no *.txt file in the directory"},
        {"needle MODEL --lengths 40", 1, "leaves no room for a haystack"},
        {"needle MODEL --needle ''", 2, "must not be empty"},
        {"needle MODEL --device tpu", 2, "unknown device"},
        {"needle", 2, "give one MODEL"},
        {"passkey MODEL --trials 0", 2, "--trials '0'"},
        {"passkey MODEL --lengths 40", 1, "too short"},
        {"passkey /nonexistent", 1, "/nonexistent"},
        {"ppl MODEL --by-position --text TEXT --buckets 0", 2, "--buckets '0'"},
        {"ppl MODEL --by-position", 2, "--text FILE"},
        {"ppl MODEL --by-position --text /nonexistent.txt", 1, "/nonexistent.txt: cannot open"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[1024], *o = args;
        for (const char *p = bad[i].args; *p && o < args + sizeof args - 300;) {
            if (strncmp(p, "MODEL", 5) == 0)
                o += sprintf(o, "'%s'", dir), p += 5;
            else if (strncmp(p, "EMPTY", 5) == 0)
                o += sprintf(o, "'%s'", empty), p += 5;
            else if (strncmp(p, "TEXT", 4) == 0)
                o += sprintf(o, "'%s'", text), p += 4;
            else
                *o++ = *p++;
        }
        *o = 0;
        snprintf(cmd, sizeof cmd, "%s %s", eval, args);
        int rc = lg_run_capture(cmd, out, sizeof out);
        if (rc != bad[i].status || !strstr(out, bad[i].msg))
            fprintf(stderr, "\n  lg-eval %s: exit %d: %s\n", bad[i].args, rc, out);
        CU_ASSERT_EQUAL(rc, bad[i].status);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, bad[i].msg));
    }
}

int lg_register_needle_tests(void)
{
    CU_pSuite s = CU_add_suite("needle", suite_init, suite_clean);
    if (!s)
        return -1;
    CU_add_test(s, "test_lengths_and_depths_are_parsed", test_lengths_and_depths_are_parsed);
    CU_add_test(s, "test_sentences_end_at_terminators_and_glued_paragraphs",
                test_sentences_end_at_terminators_and_glued_paragraphs);
    CU_add_test(s, "test_haystack_length_in_tokens_is_within_one_percent",
                test_haystack_length_in_tokens_is_within_one_percent);
    CU_add_test(s, "test_needle_is_inserted_at_the_asked_depth_within_a_sentence",
                test_needle_is_inserted_at_the_asked_depth_within_a_sentence);
    CU_add_test(s, "test_answers_are_scored_by_containment_and_word_overlap",
                test_answers_are_scored_by_containment_and_word_overlap);
    CU_add_test(s, "test_grid_json_has_the_documented_schema", test_grid_json_has_the_documented_schema);
    CU_add_test(s, "test_svg_pictures_are_written_whole", test_svg_pictures_are_written_whole);
    CU_add_test(s, "test_passkey_prompt_reproduces_the_fixture_ids", test_passkey_prompt_reproduces_the_fixture_ids);
    CU_add_test(s, "test_passkey_found_with_the_plan_and_missed_with_every_layer_sparse",
                test_passkey_found_with_the_plan_and_missed_with_every_layer_sparse);
    CU_add_test(s, "test_ppl_by_position_buckets_add_up_to_the_perplexity",
                test_ppl_by_position_buckets_add_up_to_the_perplexity);
    CU_add_test(s, "test_needle_grid_runs_end_to_end_on_kjv_pg_llama",
                test_needle_grid_runs_end_to_end_on_kjv_pg_llama);
    CU_add_test(s, "test_long_eval_tools_run_and_refuse_bad_input", test_long_eval_tools_run_and_refuse_bad_input);
    return 0;
}
