/* RoPE frequencies as Hugging Face transformers computes them (modeling_rope_utils.py,
 * ROPE_INIT_FUNCTIONS), kept in float32 where torch computes in float32. */
#include <math.h>
#include <string.h>

#include "hf_config.h"

static const char *const rope_names[] = {"default", "linear", "dynamic", "yarn", "llama3"};

const char *lg_rope_type_name(lg_rope_type t)
{
    return (unsigned)t < sizeof rope_names / sizeof rope_names[0] ? rope_names[t] : "?";
}

int lg_rope_type_from_name(const char *name, lg_rope_type *out)
{
    for (unsigned i = 0; i < sizeof rope_names / sizeof rope_names[0]; i++)
        if (strcmp(name, rope_names[i]) == 0) {
            *out = (lg_rope_type)i;
            return 0;
        }
    return -1;
}

int lg_rope_check(const lg_rope *r, const char *label, lg_err *err)
{
    if (!(r->theta > 1.0) || !isfinite(r->theta))
        return lg_err_set(err, "%s: rope_theta %g must be > 1", label, r->theta);
    if (r->type != LG_ROPE_DEFAULT && (!(r->factor >= 1.0) || !isfinite(r->factor)))
        return lg_err_set(err, "%s: rope %s factor %g must be >= 1", label,
                          lg_rope_type_name(r->type), r->factor);
    if (r->type == LG_ROPE_LLAMA3) {
        if (!(r->high_freq_factor > r->low_freq_factor) || !(r->low_freq_factor > 0))
            return lg_err_set(err, "%s: rope llama3 needs 0 < low_freq_factor < high_freq_factor",
                              label);
        if (r->original_max_pos <= 0)
            return lg_err_set(err, "%s: rope llama3 needs original_max_position_embeddings", label);
    }
    if (r->type == LG_ROPE_YARN && (r->beta_fast <= 0 || r->beta_slow <= 0))
        return lg_err_set(err, "%s: rope yarn beta_fast/beta_slow must be > 0", label);
    return 0;
}

/* base ** (2i / dim) in float32, as `base ** (torch.arange(0, dim, 2).float() / dim)` */
static float pos_freq(double base, int i, int dim)
{
    return powf((float)base, (float)(2 * i) / (float)dim);
}

static double yarn_mscale(double scale)
{
    return scale <= 1.0 ? 1.0 : 0.1 * log(scale) + 1.0;
}

static double yarn_correction_dim(double rotations, int dim, double base, int max_pos)
{
    return (dim * log(max_pos / (rotations * 2 * M_PI))) / (2 * log(base));
}

static void yarn_inv_freq(const lg_rope *r, int dim, int max_pos, float *out, float *scale)
{
    int orig = r->original_max_pos > 0 ? r->original_max_pos : max_pos;
    double factor = r->factor;
    *scale = (float)(r->attention_factor > 0 ? r->attention_factor : yarn_mscale(factor));
    double low = floor(yarn_correction_dim(r->beta_fast, dim, r->theta, orig));
    double high = ceil(yarn_correction_dim(r->beta_slow, dim, r->theta, orig));
    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001;
    for (int i = 0; i < dim / 2; i++) {
        float pf = pos_freq(r->theta, i, dim);
        float extrap = 1.0f / pf;
        float interp = 1.0f / ((float)factor * pf);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float extrap_factor = 1.0f - ramp;
        out[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
}

static void llama3_inv_freq(const lg_rope *r, int dim, float *out)
{
    double old_ctx = r->original_max_pos;
    double low_wavelen = old_ctx / r->low_freq_factor;
    double high_wavelen = old_ctx / r->high_freq_factor;
    float factor = (float)r->factor;
    for (int i = 0; i < dim / 2; i++) {
        float f = 1.0f / pos_freq(r->theta, i, dim);
        float wavelen = (float)(2 * M_PI) / f;
        float scaled = wavelen > low_wavelen ? f / factor : f;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
            float smooth = (float)((old_ctx / wavelen - r->low_freq_factor) /
                                   (r->high_freq_factor - r->low_freq_factor));
            scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        }
        out[i] = scaled;
    }
}

void lg_rope_inv_freq(const lg_rope *r, int head_dim, int max_pos, int seq_len, float *out,
                      float *attn_scale)
{
    int dim = head_dim;
    double base = r->theta;
    *attn_scale = 1.0f;
    switch (r->type) {
    case LG_ROPE_YARN:
        yarn_inv_freq(r, dim, max_pos, out, attn_scale);
        return;
    case LG_ROPE_LLAMA3:
        llama3_inv_freq(r, dim, out);
        return;
    case LG_ROPE_DYNAMIC:
        if (seq_len > max_pos)
            base = base * pow(r->factor * seq_len / max_pos - (r->factor - 1), (double)dim / (dim - 2));
        break;
    default:
        break;
    }
    for (int i = 0; i < dim / 2; i++) {
        out[i] = 1.0f / pos_freq(base, i, dim);
        if (r->type == LG_ROPE_LINEAR)
            out[i] /= (float)r->factor;
    }
}
