/* Needle in a haystack (gkamradt/LLMTest_NeedleInAHaystack): a long text (the haystack, by default
 * Paul Graham's essays) cut at sentence boundaries to a token length, one sentence (the needle)
 * inserted at a depth, a question about it at the end; the model's greedy answer is scored against
 * the expected answer. Run over lengths x depths, it gives the grid drawn as a heatmap.
 *
 * The prompt (after BOS), as in Fu et al. 2024's needle test for base models
 * (FranxYao/Long-Context-Data-Engineering, eval/needle/needle_in_haystack.py), without the chat tokens:
 *   "This is a very long story book: <book> " HAYSTACK-WITH-NEEDLE " </book>.\n"
 *   "Based on the content of the book, Question: " QUESTION "\nAnswer:" [" " ANSWER_PREFIX]
 * A context length L is the whole sequence: this prompt plus the max_new answer tokens fit in L, so the
 * haystack gets L minus the template, the needle, the question and max_new tokens, less 1% and two
 * tokens (the haystack's tolerance and the joins). */
#ifndef LG_NEEDLE_H
#define LG_NEEDLE_H

#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "engine.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------- the haystack's source text */

/* A text split into sentences and tokenized once, so that haystacks of any length can be cut from it
 * without encoding it again. A sentence ends at '.', '!' or '?' (closing quotes and brackets
 * included) followed by whitespace, the end of the text, or a capital letter after a lower-case
 * letter or digit (the essays' paragraphs are glued: "accelerating.We"); a blank line ends one too.
 * Decimals ("3.5") and "U.S.A" do not. */
typedef struct lg_corpus {
    char *text;          /* NUL-terminated; invalid UTF-8 and NUL bytes replaced by '?' */
    size_t len;
    long n_sent;
    size_t *sent_start;  /* byte of sentence k's first character */
    size_t *sent_end;    /* just past its last character (the punctuation and closers) */
    long *tok_first;     /* index of the token holding sentence k's first character */
    long *tok_end;       /* tokens that start before sent_end[k] */
    long n_tokens;       /* of the whole text, encoded without BOS */
} lg_corpus;

/* Reads a file, or a directory's *.txt files except LICENSE* in sorted order joined by blank lines
 * (the text/pg-essays fixture holds the source repository's licence beside the essays). Repeats the
 * text until it has at least min_tokens tokens (a 128K haystack from a shorter corpus, as gkamradt's
 * test does). Free with lg_corpus_free. */
int lg_corpus_load(const char *path, const lg_tokenizer *t, long min_tokens, lg_corpus *c, lg_err *err);
/* The same from text in memory (label names it in messages). */
int lg_corpus_from_text(const char *text, size_t len, const char *label, const lg_tokenizer *t,
                        long min_tokens, lg_corpus *c, lg_err *err);
void lg_corpus_free(lg_corpus *c);

/* ---------------------------------------------------------------- the haystack */

/* Consecutive whole sentences of a corpus whose token count (encoded alone, without BOS) is within
 * 1% of the length asked (exact below 100 tokens when the corpus allows; the closest otherwise). It
 * starts at the corpus's first sentence when that can meet the tolerance, else at the first sentence
 * that can. The needle goes in at a cut: cut 0 is the start, cut k the end of sentence k. */
typedef struct lg_haystack {
    char *text;
    size_t len;
    long n_tokens;
    long first_sent;  /* index in the corpus of its first sentence */
    long n_sent;
    size_t *cut;      /* n_sent + 1 byte offsets: 0, then just past each sentence */
    long *cut_tok;    /* tokens before each cut, from the corpus's tokenization */
} lg_haystack;

int lg_haystack_cut(const lg_corpus *c, const lg_tokenizer *t, long n_tokens, lg_haystack *h,
                    lg_err *err);
void lg_haystack_free(lg_haystack *h);
/* The cut whose token offset is closest to depth_pct percent of the haystack's tokens. */
long lg_haystack_cut_at_depth(const lg_haystack *h, double depth_pct);
/* The haystack with the needle inserted at cut k; malloc'd, NUL-terminated, length in *len. */
char *lg_haystack_insert(const lg_haystack *h, long cut, const char *needle, size_t *len, lg_err *err);

/* ---------------------------------------------------------------- the test */

typedef struct lg_needle_spec {
    const char *needle, *question, *answer;
    const char *answer_prefix; /* the start of the answer, written after "Answer:" (may be "") */
} lg_needle_spec;

/* gkamradt's needle and question; the answer prefix makes a base model complete the sentence. */
lg_needle_spec lg_needle_default_spec(void);

/* The prompt text around a haystack that holds the needle (malloc'd, length in *len). */
char *lg_needle_prompt_text(const char *haystack, size_t hay_len, const lg_needle_spec *spec, size_t *len);

/* Score of an answer: contains = the expected answer appears in the output (ASCII case and runs of
 * whitespace ignored); overlap = fraction of the answer's words (lower-cased runs of letters and
 * digits, each counted at most as often as the output has it) found in the output;
 * score = (contains + overlap) / 2, so 1 means found verbatim and a near miss scores below 1/2. */
typedef struct lg_needle_score {
    int contains;
    double overlap, score;
} lg_needle_score;

lg_needle_score lg_needle_score_answer(const char *output, const char *answer);

typedef struct lg_needle_cell {
    long length;          /* asked context length (tokens) */
    double depth;         /* asked depth (percent of the haystack before the needle) */
    long haystack_tokens; /* of the haystack without the needle */
    long prompt_tokens;   /* BOS included */
    long needle_token;    /* index in the prompt of the needle's first token */
    double needle_depth;  /* where it landed: percent of the haystack's tokens before it */
    char *output;         /* the greedy answer, decoded */
    lg_needle_score s;
    double seconds;
} lg_needle_cell;

typedef struct lg_needle_grid {
    int n_lengths, n_depths;
    long *lengths;
    double *depths;
    int max_new;          /* answer tokens at most (generation stops at EOS or a line break too) */
    lg_needle_cell *cells; /* [n_depths][n_lengths], filled by lg_needle_grid_run */
} lg_needle_grid;

/* Copies the lists; free with lg_needle_grid_free. */
int lg_needle_grid_init(lg_needle_grid *g, const long *lengths, int n_lengths, const double *depths,
                        int n_depths, int max_new, lg_err *err);
void lg_needle_grid_free(lg_needle_grid *g);

/* Tokens of the prompt besides the haystack (BOS, template, needle, question, answer prefix). */
long lg_needle_overhead_tokens(const lg_tokenizer *t, const lg_needle_spec *spec, lg_err *err);
/* Haystack tokens for a context length: (length - overhead - max_new - 2) / 1.01, so that a haystack
 * 1% over it still fits; error when not positive. */
long lg_needle_haystack_tokens(long length, long overhead, int max_new, lg_err *err);

/* One cell: the needle at depth_pct in h, the greedy answer, its score. */
int lg_needle_run_cell(lg_engine *s, const lg_tokenizer *t, const lg_haystack *h,
                       const lg_needle_spec *spec, double depth_pct, int max_new, lg_needle_cell *cell,
                       lg_err *err);

/* Every cell of the grid; the corpus must hold the longest haystack. log (may be NULL) gets one line
 * per cell. */
int lg_needle_grid_run(lg_engine *s, const lg_tokenizer *t, const lg_corpus *c,
                       const lg_needle_spec *spec, lg_needle_grid *g, FILE *log, lg_err *err);

/* {"model", "haystack", "needle", "question", "answer", "answer_prefix", "max_new", "lengths",
 *  "depths", "cells": [{"length", "depth", "haystack_tokens", "prompt_tokens", "needle_token",
 *  "needle_depth", "output", "contains", "overlap", "score", "seconds"}...] (depth-major),
 *  "mean_score"} */
cJSON *lg_needle_grid_json(const lg_needle_grid *g, const lg_needle_spec *spec, const char *model,
                           const char *haystack);
/* The score table: a row per depth, a column per length, the mean per length at the bottom. */
void lg_needle_grid_print(FILE *f, const lg_needle_grid *g);
/* The heatmap: depth (rows, 0% at the top) x length, colour = score. */
int lg_needle_grid_svg(const char *path, const lg_needle_grid *g, const char *title, lg_err *err);

/* "1k" for 1024, "1536" otherwise (buf of 24 bytes). */
const char *lg_length_name(long n, char buf[24]);

#endif
