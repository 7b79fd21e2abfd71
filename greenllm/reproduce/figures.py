"""PNG figures of the reproduced evaluation (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greenllm.errors import missing_extra

__all__ = ["write_figures"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise missing_extra("matplotlib", "plot") from err
    return plt


def write_figures(result: dict[str, Any], out: Path) -> list[Path]:
    """Write fig4 and fig9-fig15 as PNG files into ``out``; return their paths."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    apps = list(result["fig9"])
    fig, axes = plt.subplots(len(apps), 2, figsize=(10, 3.2 * len(apps)), squeeze=False)
    for ax, app in zip(axes, apps, strict=True):
        rows = result["fig9"][app]["rows"]
        q = [r["qps"] for r in rows]
        ax[0].plot(q, [r["baseline_g_per_token"] for r in rows], "o-", label="Standalone A100")
        ax[0].plot(q, [r["carbon_g_per_token"] for r in rows], "s-", label="GreenLLM")
        for r in rows:
            ax[0].annotate(r["kind"], (r["qps"], r["carbon_g_per_token"]), fontsize=6)
        ax[0].set(title=f"{app}: carbon per token", xlabel="QPS", ylabel="gCO2/token")
        ax[0].legend(fontsize=7)
        ax[1].bar(q, [100 * r["operational_savings"] for r in rows], width=0.3,
                  label="operational")  # fmt: skip
        ax[1].bar(
            q,
            [100 * r["embodied_savings"] for r in rows],
            width=0.3,
            bottom=[100 * r["operational_savings"] for r in rows],
            label="embodied",
        )
        ax[1].set(title=f"{app}: savings vs Standalone", xlabel="QPS", ylabel="%")
        ax[1].legend(fontsize=7)
    save(fig, "fig9_carbon_savings")

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for size, rows in result["fig10"].items():
        q = [r["qps"] for r in rows]
        ax[0].plot(q, [100 * r["savings"] for r in rows], "o-", label=f"ShareGPT {size}")
        ax[1].plot(q, [r["slo_attainment"] for r in rows], "o-", label=f"GreenLLM {size}")
        ax[1].plot(q, [r["baseline_slo_attainment"] for r in rows], "x--",
                   label=f"Standalone {size}")  # fmt: skip
    ax[0].set(title="Fig. 10: savings by request size", xlabel="QPS", ylabel="%")
    ax[1].axhline(result["slo_target"], color="k", ls=":")
    ax[1].set(title="Fig. 12: SLO attainment", xlabel="QPS", ylabel="fraction")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=6)
    save(fig, "fig10_fig12_sizes")

    fig, axes = plt.subplots(len(apps), 2, figsize=(10, 3 * len(apps)), squeeze=False)
    for ax, app in zip(axes, apps, strict=True):
        rows = [r for r in result["fig11"][app] if r["ttft_mean_s"] is not None]
        q = [r["qps"] for r in rows]
        for k, (metric, slo_key) in enumerate((("ttft", "ttft_s"), ("tpot", "tpot_s"))):
            ax[k].plot(q, [r[f"{metric}_mean_s"] for r in rows], "s-", label="GreenLLM")
            ax[k].plot(q, [r[f"standalone_{metric}_mean_s"] for r in rows], "o-",
                       label="Standalone A100")  # fmt: skip
            if rows:
                ax[k].axhline(rows[0]["slo"][slo_key], color="r", ls=":", label="SLO")
            ax[k].set(title=f"{app}: mean {metric.upper()}", xlabel="QPS", ylabel="s",
                      yscale="log")  # fmt: skip
            ax[k].legend(fontsize=7)
    save(fig, "fig11_latency")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for gbps, rows in result["fig13"].items():
        ax.plot([r["qps"] for r in rows], [100 * r["savings"] for r in rows], "o-",
                label=f"{gbps} Gbps")  # fmt: skip
    ax.set(title="Fig. 13: savings vs link bandwidth (ShareGPT P50)", xlabel="QPS", ylabel="%")
    ax.legend(fontsize=7)
    save(fig, "fig13_bandwidth")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for region, data in result["fig14"].items():
        rows = data["rows"]
        ax.plot([r["qps"] for r in rows], [100 * r["savings"] for r in rows], "o-", label=region)
    ax.set(title="Fig. 14: savings by region (ShareGPT P50)", xlabel="QPS", ylabel="%")
    ax.legend(fontsize=7)
    save(fig, "fig14_regions")

    if result.get("fig15"):
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for key, data in result["fig15"].items():
            if not key.startswith("qps_"):
                continue
            for k, which in enumerate(("old_lifetime", "new_lifetime")):
                xs = [float(x) for x in data[which]]
                ax[k].plot(xs, [100 * v for v in data[which].values()], "o-", label=key)
        ax[0].set(title="Fig. 15: old-GPU (T4) lifetime", xlabel="years", ylabel="savings %")
        ax[1].set(title="Fig. 15: new-GPU (A100) lifetime", xlabel="years", ylabel="savings %")
        ax[0].legend(fontsize=7)
        save(fig, "fig15_lifetimes")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = sorted({k for e in result["fig4"] for k in e if k != "qps"})
    for label in labels:
        pts = [(e["qps"], e[label]["gbps"]) for e in result["fig4"] if label in e]
        ax.plot(*zip(*pts, strict=True), "o-", label=label)
    ax.set(title="Fig. 4: link bandwidth used", xlabel="QPS", ylabel="Gbps", yscale="log")
    ax.legend(fontsize=6)
    save(fig, "fig4_bandwidth_needed")
    return paths
