/* libFuzzer harness: Hugging Face tokenizer.json through the whole tokenizer build
 * (lg_tokenizer_load_memory), then the same encode/decode exercise as fuzz_tokenizer_model.c. */
#define LG_FUZZ_JSON 1
#define LG_FUZZ_LABEL "tokenizer.json"
#include "fuzz_tokenizer_model.c"
