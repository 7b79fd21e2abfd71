"""Serve ShareGPT at 2 QPS on the simulator in three configurations; compare carbon per token."""

from greenllm import Configuration
from greenllm.backends import get_backend
from greenllm.workloads import workload

sim = get_backend("sim")
w = workload("sharegpt", qps=2.0)  # Table 2: P50 size (160, 140), SLO 200 ms / 80 ms
for cfg in [Configuration(kind="standalone"),
            Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"),
            Configuration(kind="dpd", old_gpu="V100")]:  # fmt: skip
    run = sim.run(cfg, w, duration_s=600, seed=0)
    c = run.carbon(intensity_g_per_kwh=261)  # CISO, 7-year lifetimes
    print(
        f"{cfg.label:30} SLO {run.slo_attainment():.0%}  {c.total_per_token_g * 1e3:.4f} mg/token"
    )
