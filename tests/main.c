/* The test runner: every suite registers itself here; CUnit prints the summary. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

#include "test_env.h"

int lg_register_dtype_tests(void);
int lg_register_malformed_tests(void);
int lg_register_safetensors_tests(void);
int lg_register_config_tests(void);
int lg_register_convert_tests(void);
int lg_register_tokenizer_tests(void);
int lg_register_forward_cpu_tests(void);
int lg_register_eval_tests(void);
int lg_register_engine_tests(void);
int lg_register_needle_tests(void);
int lg_register_long_eval_models_tests(void);
int lg_register_package_tests(void);
int lg_register_quant_tests(void);
int lg_register_crash_safety_tests(void);
int lg_register_fuzz_regressions_tests(void);
int lg_register_ops_cpu_tests(void);
int lg_register_tp_tests(void);

static const lg_suite_register_fn suites[] = {
    lg_register_dtype_tests,
    lg_register_malformed_tests,
    lg_register_safetensors_tests,
    lg_register_config_tests,
    lg_register_convert_tests,
    lg_register_tokenizer_tests,
    lg_register_forward_cpu_tests,
    lg_register_eval_tests,
    lg_register_engine_tests,
    lg_register_needle_tests,
    lg_register_long_eval_models_tests,
    lg_register_package_tests,
    lg_register_quant_tests,
    lg_register_crash_safety_tests,
    lg_register_fuzz_regressions_tests,
    lg_register_ops_cpu_tests,
    lg_register_tp_tests,
};

int main(int argc, char **argv)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        if (suites[i]() != 0) {
            fprintf(stderr, "suite registration failed: %s\n", CU_get_error_msg());
            return 2;
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    /* `lg-tests [SUITE...]` runs the named suites, or all */
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (!CU_get_suite(argv[i])) {
                fprintf(stderr, "no suite named %s\n", argv[i]);
                return 2;
            }
        for (CU_pSuite s = CU_get_registry()->pSuite; s; s = s->pNext) {
            int wanted = 0;
            for (int i = 1; i < argc; i++)
                wanted |= strcmp(s->pName, argv[i]) == 0;
            CU_set_suite_active(s, wanted);
        }
    }
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
