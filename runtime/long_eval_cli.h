/* lg-eval's long-context subcommands: needle, passkey and ppl --by-position (argument handling and
 * output; the measurements are in needle.h, passkey.h, ppl_position.h). lg_eval_main.c hands argv
 * over when lg_long_eval_handles says so. */
#ifndef LG_LONG_EVAL_CLI_H
#define LG_LONG_EVAL_CLI_H

#include "error.h"

/* argv[1] is needle or passkey, or ppl with --by-position among the arguments. */
int lg_long_eval_handles(int argc, char **argv);
/* Runs the subcommand; the process exit status (0 ok, 1 failed, 2 bad usage). */
int lg_long_eval_main(int argc, char **argv);
/* Usage lines for lg-eval's --help. */
extern const char lg_long_eval_usage[];

/* A token count: "4096", "1k" (1024), "128k", "1m" (1048576). */
int lg_parse_length(const char *s, long *out, lg_err *err);
/* A comma-separated list of lengths (malloc'd into *out). */
int lg_parse_lengths(const char *s, long **out, int *n, lg_err *err);
/* A comma-separated list of percentages in 0..100; "..." continues the step of the two values
 * before it up to the value after it ("0,10,...,100" is 11 depths). */
int lg_parse_depths(const char *s, double **out, int *n, lg_err *err);

#endif
