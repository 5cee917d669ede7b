/* `lg-eval quant-report MODEL_A MODEL_B --text FILE... [--ctx N]`: how far a quantized model B is
 * from its reference A on the same tokens: perplexity of both, the KL divergence of B's next-token
 * distributions from A's, and how often their top-1 tokens agree (the table llama.cpp users read
 * when choosing a quantization).
 *
 * Both models score the same windows as `lg-eval ppl` (ctx + 1 tokens every ctx, each a fresh
 * sequence), so ppl_a equals `lg-eval ppl MODEL_A` on the same files. */
#ifndef LG_QUANT_REPORT_H
#define LG_QUANT_REPORT_H

#include "engine.h"
#include "error.h"

typedef struct lg_quant_report {
    double ppl_a, ppl_b;
    double kl_mean, kl_p99, kl_max; /* KL(P_A || P_B) per predicted token, nats */
    double top1_agree;              /* fraction of positions where argmax A == argmax B */
    long predicted, windows;
    double seconds;
} lg_quant_report;

/* Scores tokens[0..n) with both engines (models of one vocabulary `vocab`). */
int lg_quant_report_run(lg_engine *a, lg_engine *b, int vocab, const int *tokens, long n, int ctx,
                        int show_progress, lg_quant_report *r, lg_err *err);

/* KL(P || Q) of the softmaxes of two logit rows, and -log P[target] (in double). */
double lg_kl_logits(const float *p_logits, const float *q_logits, int n, int target, double *nll_p,
                    double *nll_q);

/* The subcommand: argv[0] is "quant-report". Returns the exit status (0, 1 failed, 2 usage). */
int lg_quant_report_main(int argc, char **argv);
extern const char lg_quant_report_usage[];

#endif
