/* What every suite needs from its surroundings: where the fixtures and the built tools are, scratch
 * directories, and running a tool to check its exit status and message. */
#ifndef LG_TEST_ENV_H
#define LG_TEST_ENV_H

#include <stddef.h>

/* ../shared/fixtures beside the source tree, or $LG_FIXTURES. Returns a static buffer. */
const char *lg_fixtures_dir(void);
/* Joins fixtures dir and rel into buf. */
const char *lg_fixture(char *buf, size_t n, const char *rel);
/* Creates a fresh scratch directory under $TMPDIR (removed by lg_test_cleanup at exit). */
const char *lg_test_tmpdir(void);
/* Path of a built tool (lg-convert, lg-eval, ...). */
const char *lg_tool(char *buf, size_t n, const char *name);
/* Runs a shell command, captures stdout+stderr (truncated to out_n) and returns the exit status
 * (or 128+signal when it died of a signal). */
int lg_run_capture(const char *cmd, char *out, size_t out_n);
/* Writes bytes to a file; 0 on success. */
int lg_write_file(const char *path, const void *data, size_t n);
/* Reads a whole file into a malloc'd buffer; NULL on failure. */
char *lg_read_file(const char *path, size_t *n);
/* 1 when path exists. */
int lg_path_exists(const char *path);
/* rm -rf */
void lg_rm_rf(const char *path);

/* Each suite file defines one registration function, listed in main.c. */
typedef int (*lg_suite_register_fn)(void);

#endif
