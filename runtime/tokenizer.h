/* The Llama-2 tokenizer: text <-> token ids exactly as sentencepiece's BPE model encodes and decodes
 * them, from a tokenizer.model (SentencePiece protobuf) or, where only that exists, a Hugging Face
 * tokenizer.json made from the same model. */
#ifndef LG_TOKENIZER_H
#define LG_TOKENIZER_H

#include <stddef.h>

#include "error.h"

typedef struct lg_tokenizer lg_tokenizer;

/* path: a checkpoint directory (uses DIR/tokenizer.model if present, else DIR/tokenizer.json) or a
 * file path to either (a name ending in .json is read as tokenizer.json, anything else as a
 * SentencePiece model). NULL with err set when the file is missing or malformed.
 * Free with lg_tokenizer_free. */
lg_tokenizer *lg_tokenizer_load(const char *path, lg_err *err);
/* The same from a file's bytes in memory (data, n): a tokenizer.json when is_json, else a
 * SentencePiece model; `label` names it in messages and is its source. For the fuzz harnesses. */
lg_tokenizer *lg_tokenizer_load_memory(const char *data, size_t n, int is_json, const char *label,
                                       lg_err *err);
void lg_tokenizer_free(lg_tokenizer *t);

/* The file the tokenizer was read from. */
const char *lg_tokenizer_source(const lg_tokenizer *t);
int lg_tokenizer_vocab_size(const lg_tokenizer *t);
int lg_tokenizer_bos_id(const lg_tokenizer *t); /* 1 for Llama-2; -1 when the model has none */
int lg_tokenizer_eos_id(const lg_tokenizer *t); /* 2 for Llama-2; -1 when the model has none */
int lg_tokenizer_unk_id(const lg_tokenizer *t); /* 0 for Llama-2 */

/* Encodes text (len bytes, need not be NUL-terminated) as sentencepiece's Encode does; prepends BOS
 * when add_bos. *ids is malloc'd (caller frees), *n_ids its length. 0 on success. Text is one
 * sentence to sentencepiece: "<s>" in it is plain text, not BOS. */
int lg_tokenizer_encode(const lg_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                        int *n_ids, lg_err *err);

/* Decodes ids as sentencepiece's DecodeIds does: control ids (BOS, EOS) print nothing, <unk> prints
 * " \u2047 ", '▁' becomes ' ', the leading space of the first word is dropped, runs of <0xNN> byte
 * pieces are reassembled into UTF-8 (each invalid byte becomes U+FFFD). Returns a malloc'd
 * NUL-terminated string (caller frees), NULL on error (an id out of range). */
char *lg_tokenizer_decode(const lg_tokenizer *t, const int *ids, int n_ids, lg_err *err);
/* The same, also giving the length in *len (the text may hold NUL bytes, from <0x00>). */
char *lg_tokenizer_decode_len(const lg_tokenizer *t, const int *ids, int n_ids, size_t *len, lg_err *err);

/* Raw piece text of id ("▁Hello", "<0x0A>", "<s>"), NULL if out of range. Owned by t. */
const char *lg_tokenizer_piece(const lg_tokenizer *t, int id);

#endif
