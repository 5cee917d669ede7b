/* The shared pieces of kernels/: dtype sizes, the last-error message, mask checks. */
#include <stdarg.h>
#include <stdio.h>

#include "kernel_common.cuh"

#include <stdlib.h>
#include <string.h>

static thread_local char lg_k_msg[512];

/* per thread (a tensor-parallel engine drives one device a thread): the device last asked about
 * and what the launchers need to know of it */
static thread_local int attr_device = -1, pdl_on = 0, sm_count = 1, sm90 = 0;

static bool refresh_device_attrs()
{
    int dev;
    if (cudaGetDevice(&dev) != cudaSuccess)
        return false;
    if (dev != attr_device) {
        int major = 0, minor = 0, sms = 1;
        const char *env = getenv("LG_PDL");
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        sm90 = major == 9 && minor == 0;
        pdl_on = sm90 && !(env && strcmp(env, "0") == 0);
        sm_count = sms > 0 ? sms : 1;
        attr_device = dev;
    }
    return true;
}

bool lg_pdl_enabled()
{
    return refresh_device_attrs() && pdl_on;
}

int lg_sm_count()
{
    return refresh_device_attrs() ? sm_count : 1;
}

bool lg_is_sm90()
{
    return refresh_device_attrs() && sm90;
}

extern "C" int lg_k_pdl_active(void)
{
    return lg_pdl_enabled();
}

extern "C" int lg_kdtype_size(lg_kdtype dt)
{
    switch (dt) {
    case LG_KDT_F32:
        return 4;
    case LG_KDT_F16:
    case LG_KDT_BF16:
        return 2;
    }
    return 0;
}

extern "C" const char *lg_k_last_error(void)
{
    return lg_k_msg;
}

extern "C" int lg_k_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lg_k_msg, sizeof lg_k_msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lg_dmask_from(const lg_kmask *mask, lg_dmask *out, const char *who)
{
    lg_dmask m = {LG_KMASK_FULL, 0, 0, 1, 1, 1};
    if (mask) {
        m.kind = mask->kind;
        m.sink = mask->sink;
        m.window = mask->window;
        m.block = mask->block;
        m.local = mask->local;
        m.stride = mask->stride;
        if (m.kind == LG_KMASK_SINK_WINDOW) {
            if (m.sink < 0 || m.window <= 0)
                return lg_k_fail("%s: sink_window mask needs sink >= 0 and window > 0 (got %d, %d)",
                                 who, m.sink, m.window);
        } else if (m.kind == LG_KMASK_BLOCK_STRIDED) {
            if (m.block <= 0 || m.local <= 0 || m.stride <= 0)
                return lg_k_fail("%s: block_strided mask needs block, local, stride > 0 "
                                 "(got %d, %d, %d)", who, m.block, m.local, m.stride);
        } else if (m.kind != LG_KMASK_FULL) {
            return lg_k_fail("%s: unknown mask kind %d", who, (int)m.kind);
        }
    }
    *out = m;
    return 0;
}

int lg_smem_optin(const void *fn, size_t bytes, unsigned long long *done)
{
    int dev;
    LG_CUDA_TRY(cudaGetDevice(&dev));
    unsigned long long bit = dev < 64 ? 1ull << dev : 0;
    if (bit && (__atomic_load_n(done, __ATOMIC_ACQUIRE) & bit))
        return 0;
    LG_CUDA_TRY(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    __atomic_fetch_or(done, bit, __ATOMIC_RELEASE);
    return 0;
}
