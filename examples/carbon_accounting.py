"""Carbon of a serving window on two GPUs, split over concurrent requests (no double counting)."""

from greenllm.carbon import DeviceUsage, carbon_intensity, split_by_tokens, window_carbon
from greenllm.carbon.analysis import compare

# One hour: an A100 drew 0.6 MJ and a T4 0.2 MJ while serving 3 requests of 100, 300, 600 tokens.
window = window_carbon(
    [DeviceUsage("A100", 3600, 6e5), DeviceUsage("T4", 3600, 2e5)],
    carbon_intensity("CISO"),
    tokens=1000,
)
print(
    f"window: {window.total_g:.2f} g ({window.embodied_g:.3f} g embodied), "
    f"{window.total_per_token_g * 1e3:.3f} mg/token"
)
for i, part in enumerate(split_by_tokens(window, [100, 300, 600])):
    print(f"request {i}: {part.total_g:.3f} g")

# Section 5: is the pair better than the A100 alone drawing 1.2 MJ for the same work?
report = compare(
    DeviceUsage("A100", 3600, 1.2e6),
    [DeviceUsage("A100", 3600, 6e5), DeviceUsage("T4", 3600, 2e5)],
    region="CISO",
)
print(report.summary)
