"""torch.nn.functional.scaled_dot_product_attention on the shapes of lg-kernel-check's prefill
timings (batch 1, 32 heads, head_dim 128, causal), in TFLOP/s counted as lg-kernel-check counts
them: 4 * head_dim * heads * T(T+1)/2 (the visible pairs). Median of CUDA-event timings."""
import torch
import torch.nn.functional as F


def bench(dtype, T, heads=32, hd=128):
    q, k, v = (torch.randn(1, heads, T, hd, device="cuda", dtype=dtype) for _ in range(3))
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    times = []
    for _ in range(7 if T >= 16384 else 15):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    ms = sorted(times)[len(times) // 2]
    flops = 4.0 * hd * heads * T * (T + 1) / 2
    name = "f16" if dtype == torch.float16 else "bf16"
    print(f"BENCH sdpa    {name} T {T:6d} heads {heads} hd {hd} full        : "
          f"{ms:9.3f} ms  {flops / (ms * 1e-3) / 1e12:6.1f} TFLOP/s")


if __name__ == "__main__":
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    for dtype in (torch.float16, torch.bfloat16):
        for T in (4096, 16384):
            bench(dtype, T)
