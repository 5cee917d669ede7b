/* The vocabulary and settings of a SentencePiece model, and the readers of the two files that hold
 * one: tokenizer.model (a serialized sentencepiece.ModelProto) and Hugging Face's tokenizer.json.
 * Both fill the same struct, from which the tokenizer (tokenizer.c) builds its one encoder. */
#ifndef LG_SENTENCEPIECE_MODEL_H
#define LG_SENTENCEPIECE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* '▁' (U+2581): sentencepiece's visible space, in pieces and normalized text */
#define LG_SP_SPACE "\xE2\x96\x81"
#define LG_SP_SPACE_LEN 3

/* ModelProto.SentencePiece.Type, with the protobuf's numbers. */
enum {
    LG_SP_NORMAL = 1,
    LG_SP_UNKNOWN = 2,
    LG_SP_CONTROL = 3,
    LG_SP_USER_DEFINED = 4,
    LG_SP_UNUSED = 5,
    LG_SP_BYTE = 6,
};

/* TrainerSpec.ModelType */
enum {
    LG_SP_MODEL_UNIGRAM = 1,
    LG_SP_MODEL_BPE = 2,
    LG_SP_MODEL_WORD = 3,
    LG_SP_MODEL_CHAR = 4,
};

typedef struct lg_sp_piece {
    uint32_t offset; /* into lg_sp_model.text, where the piece is stored NUL-terminated */
    uint32_t len;    /* bytes, without the NUL */
    float score;
    int type;        /* LG_SP_NORMAL ... LG_SP_BYTE */
} lg_sp_piece;

/* The fields of TrainerSpec and NormalizerSpec that encoding and decoding depend on. The defaults
 * (lg_sp_model_init) are Llama-2's values, used for any field a file leaves out. */
typedef struct lg_sp_spec {
    int model_type;                 /* LG_SP_MODEL_*; only BPE can be encoded here */
    int byte_fallback;              /* unknown characters become <0xNN> pieces */
    int unk_id;                     /* -1: not given (the UNKNOWN piece is <unk>) */
    int bos_id, eos_id;             /* -1: none */
    char *unk_surface;              /* what DecodeIds prints for <unk> (malloc'd; NULL: the default) */
    int treat_whitespace_as_suffix; /* not supported by the encoder: rejected at load */
    int add_dummy_prefix;           /* a '▁' before the text */
    int remove_extra_whitespaces;   /* strip leading/trailing spaces, squeeze runs */
    int escape_whitespaces;         /* ' ' -> '▁' */
    size_t charsmap_len;            /* normalizer_spec.precompiled_charsmap: must be empty (identity) */
    size_t denorm_charsmap_len;     /* denormalizer_spec.precompiled_charsmap: must be empty */
} lg_sp_spec;

typedef struct lg_sp_model {
    lg_sp_piece *pieces; /* indexed by id */
    int n_pieces;
    char *text;          /* every piece's bytes, each followed by a NUL */
    size_t text_len;
    lg_sp_spec spec;
    size_t pieces_cap, text_cap;
} lg_sp_model;

/* An empty model with Llama-2's settings. */
void lg_sp_model_init(lg_sp_model *m);
/* Frees what lg_sp_model_init, lg_sp_model_add_piece and lg_sp_model_read_proto allocated. */
void lg_sp_model_free(lg_sp_model *m);
/* Appends a piece (id = n_pieces before the call). 0 on success. */
int lg_sp_model_add_piece(lg_sp_model *m, const char *piece, size_t len, float score, int type,
                          lg_err *err);
/* trainer_spec.unk_surface, or sentencepiece's default " \u2047 ". */
const char *lg_sp_model_unk_surface(const lg_sp_model *m);
/* Piece text of id (NUL-terminated), no bounds check. */
static inline const char *lg_sp_model_piece(const lg_sp_model *m, int id)
{
    return m->text + m->pieces[id].offset;
}

/* Parses a serialized ModelProto (data, n bytes) into m, which must be lg_sp_model_init'ed. Every
 * length and varint is checked against the bytes that remain; on malformed input it returns -1 with a
 * message saying what is wrong and at which byte (the caller adds the file name). */
int lg_sp_model_read_proto(lg_sp_model *m, const uint8_t *data, size_t n, lg_err *err);

/* Reads a Hugging Face tokenizer.json made from a SentencePiece BPE model (text, n bytes) into m,
 * which must be lg_sp_model_init'ed: pieces from model.vocab and added_tokens, types from
 * added_tokens ("special": CONTROL) and the <0xNN> form (BYTE), scores that give sentencepiece's merge
 * order (tokenizer.json stores none). -1 with a message on malformed input (the caller adds the
 * file name). */
int lg_sp_model_read_hf_json(lg_sp_model *m, const char *text, size_t n, lg_err *err);

/* "<0x0A>" -> 10; -1 when s (n bytes) is not exactly that form (upper-case hex, as sentencepiece
 * writes byte pieces). */
int lg_sp_parse_byte_piece(const char *s, size_t n);

#endif
