"""The reproduction pipeline: profile a small grid on the simulator, resume, plan, analyse."""

from __future__ import annotations

import pytest

from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import paper_configurations
from greenllm.reproduce import Experiment, analyse, run_cells

SMALL = Experiment(
    qps={"sharegpt": (1.0, 4.0), "humaneval": (2.0,), "longbench": (0.5,)},
    sharegpt_sizes=("p50",),
    bandwidths_gbps=(2.0, 16.0),
)


def test_paper_configurations_are_the_nine_of_section_7() -> None:
    labels = [c.label for c in paper_configurations()]
    assert labels[0] == "Standalone A100"
    assert len(labels) == 9 and len(set(labels)) == 9
    assert sum(c.kind.value == "dsd" for c in paper_configurations()) == 4
    assert {c.link_gbps for c in paper_configurations(4.0) if c.old_gpu} == {4.0}


def test_small_grid_profiles_resumes_and_analyses(tmp_path) -> None:
    cells = SMALL.cells()
    with ProfileStore(tmp_path / "p.sqlite") as store:
        first = run_cells(cells, store, n_requests=60, workers=1)
        assert first["total"] == len(cells) == first["measured"] + first["infeasible"]
        again = run_cells(cells, store, n_requests=60, workers=1)
        assert again["skipped"] == len(cells) and again["measured"] == 0  # resumed: nothing redone
        records = store.query(backend="sim")
    assert len(records) == first["measured"]
    result = analyse(records, SMALL)
    rows = result["fig9"]["sharegpt"]["rows"]
    assert [r["qps"] for r in rows] == [1.0, 4.0]
    for r in rows:
        # Algorithm 1 never does worse than the Standalone baseline when it meets the SLO.
        if not r["fallback"] and r["baseline_slo_attainment"] >= 0.9:
            assert r["carbon_g_per_token"] <= r["baseline_g_per_token"] * (1 + 1e-9)
        assert r["savings"] == pytest.approx(
            1 - r["carbon_g_per_token"] / r["baseline_g_per_token"]
        )
    # Regions: same profiles, carbon recomputed; NCSW's lower intensity gives lower carbon.
    ncsw = result["fig14"]["NCSW"]["rows"][0]["baseline_g_per_token"]
    miso = result["fig14"]["MISO"]["rows"][0]["baseline_g_per_token"]
    assert ncsw < miso
    # Figure 4: per request, DPD moves the prompt's KV cache (2 x 32 layers x 4096 x 2 bytes
    # = 512 KiB per token for Llama-2-7B), DSD only token ids and draft probabilities.
    bw = result["fig4"][0]
    dpd = bw["DPD A100+V100 @16Gbps"]["mb_per_request"]
    assert dpd == pytest.approx(160 * 524_288 / 1e6)
    dsd = [v["mb_per_request"] for k, v in bw.items() if k.startswith("DSD")]
    assert dsd and all(0 < x < dpd for x in dsd)
    assert set(result["fig13"]) == {"2", "16"}


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    from greenllm.cli import main

    assert main(["demo", "--out", str(tmp_path), "--requests", "150"]) == 0
    out = capsys.readouterr().out
    assert "Peak carbon savings vs Standalone A100" in out
    assert "without and with draft-ahead" in out
    assert (tmp_path / "results.json").exists() and (tmp_path / "fig9_carbon_savings.png").exists()
    assert len(list(tmp_path.glob("fig*.png"))) == 7


def test_draft_ahead_comparison_rows() -> None:
    """One row per pair, K and load; draft-ahead hits near alpha^(K+1) (0.7 for the 1B draft,
    0.6 for the 300M one) and costs old-GPU energy: never less energy per token with it."""
    from greenllm.reproduce import compare_draft_ahead

    rows = compare_draft_ahead(olds=("V100",), ks=(2,), qps_levels=(0.5,), n_requests=120)
    assert [(r["draft"], r["k"]) for r in rows] == [("llama-1b", 2), ("llama-300m", 2)]
    for r, alpha in zip(rows, (0.7, 0.6), strict=True):
        assert r["hit_rate"] == pytest.approx(alpha**3, abs=0.06)
        assert 0 < r["hidden_share"] <= 1
        assert r["j_per_token"][1] > r["j_per_token"][0]
        assert r["tpot_ms"][1] <= r["tpot_ms"][0] * 1.01
