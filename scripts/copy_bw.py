"""Device-to-device copy bandwidth of GPU 0 in GB/s (bytes read + written, median of 10 copies of
4 GiB, far past the L2): the bandwidth limit the benchmarks set decode rates against."""
import torch

n = 4 << 30
x = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(10):
    a.record()
    y.copy_(x)
    b.record()
    b.synchronize()
    times.append(a.elapsed_time(b) / 1e3)
times.sort()
print(f"{2 * n / times[len(times) // 2] / 1e9:.1f}")
