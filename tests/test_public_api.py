"""The public API, pinned: every package and top-level module lists exactly these names in
``__all__``. A change here is a change of the public API: make it on purpose, and say so."""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API: dict[str, list[str]] = {
    "greenllm": [
        "BackendClosedError", "BackendUnavailableError", "CarbonBreakdown", "CarbonIntensityTrace",
        "CarbonMeter", "CarbonReport", "ConfigError", "ConfigKind", "Configuration", "GPUSpec",
        "GreenLLMError", "InfeasibleError", "ModelSpec", "Plan", "Planner", "ProfileError",
        "ProfileStore", "RequestSize", "RequestSizeDistribution", "SLO", "WorkerError", "Workload",
        "__version__", "carbon_intensity", "complete", "embodied_carbon_g", "get_gpu",
        "operational_carbon_g", "register_gpu", "schedule", "total_carbon_g",
    ],
    "greenllm.backends": [
        "BUILTIN_BACKENDS", "Backend", "BackendBase", "Capabilities", "ENTRY_POINT_GROUP",
        "GPUTrace", "ROLES", "RunExtra", "RunResult", "backend_class", "get_backend",
        "list_backends", "register_backend", "unregister_backend",
    ],
    "greenllm.backends.sim": [
        "ACCEPTANCE_RATES", "AcceptanceSampler", "CPU_DEVICE", "CpuProfile",
        "DEFAULT_ACCEPTANCE_RATE", "DEFAULT_LINK_LATENCY_S", "EngineParams", "Link", "LiveSim",
        "SimBackend", "SimOptions", "StepModel", "acceptance_rate_for", "forward_time_s",
        "get_model", "register_cpu",
    ],
    "greenllm.backends.torch": [
        "TorchBackend",
    ],
    "greenllm.backends.vllm": [
        "COMPUTE_CAPABILITY", "EngineSettings", "PYTHON_ENV", "TESTED_RANGE", "VLLMBackend",
        "find_vllm_python",
    ],
    "greenllm.carbon": [
        "CachedProvider", "CarbonBreakdown", "CarbonIntensityTrace", "DeviceUsage",
        "ElectricityMapsProvider", "GPUSpec", "IntensityProvider", "IntensityReading",
        "IntensityUnavailableError", "PAPER_REGIONS", "RegionInfo", "StaticProvider",
        "TRACE_REGIONS", "TraceProvider", "WattTimeProvider", "act_embodied_breakdown_kg",
        "act_embodied_kg", "amortized_embodied_g", "carbon_intensity", "embodied_carbon_g",
        "get_gpu", "lifetime_for", "list_gpus", "list_regions", "make_provider",
        "operational_carbon_g", "region_info", "register_gpu", "split_by_tokens", "total_carbon_g",
        "unregister_gpu", "window_carbon",
    ],
    "greenllm.carbon.analysis": [
        "BreakEven", "Eq6Terms", "SavingsReport", "Scenario", "breakeven_intensity",
        "breakeven_new_lifetime_years", "breakeven_old_lifetime_years", "carbon_ratio",
        "carbon_ratio_direct", "compare", "energy_condition", "lifetime_ratio",
        "lifetime_ratio_terms", "paper_setting", "ratio_slope_vs_intensity", "ratio_vs_intensity",
        "ratio_vs_lifetime", "shorter_new_lifetime_saves",
    ],
    "greenllm.carbon.catalog": [],
    "greenllm.checks": [
        "finite_array", "finite_int", "finite_number", "plain_numbers",
    ],
    "greenllm.carbon.intensity": [],
    "greenllm.cli.commands": [],
    "greenllm.cli": [
        "EXIT_BAD_INPUT", "build_parser", "main",
    ],
    "greenllm.energy": [
        "CarbonMeter", "CarbonReport", "EnergyMeasurement", "MeterWindow", "ModelledSampler",
        "NVMLSampler", "NVML_PERIOD_S", "NullSampler", "PowerModel", "PowerSampler", "RAPLSampler",
        "RaplZone", "ReplaySampler", "Sample", "cumulative_j", "default_sampler", "energy_j",
        "epoch_clock", "find_rapl_zones", "measure_window", "nvml_available", "power_model",
        "power_trace", "power_w", "rapl_available", "read_power_csv", "trapezoid_j",
        "window_series", "write_power_csv",
    ],
    "greenllm.engine": [
        "Engine", "EngineStats", "GenerationResult", "LinkEmulation", "MODES", "RequestOutput",
        "SamplingParams", "TokenEvent", "VerifyResult", "WorkerStats", "autoregressive_generate",
        "cache_dir", "cached_distilled_draft", "distill_draft", "draft_dir", "layerskip_draft",
        "load_model",
        "measure_acceptance", "probs_from_logits", "rejection_sample", "rejection_sample_lean",
        "resolve_model_dir", "sample", "smollm2_dir", "smollm2_gguf_path", "speculative_generate",
        "tiny_llama", "verify", "verify_lean",
    ],
    "greenllm.engine.comm": [],
    "greenllm.engine.driver": [],
    "greenllm.engine.model": [],
    "greenllm.engine.worker": [],
    "greenllm.profiler": [],
    "greenllm.profiler.loadgen": [
        "Aborter", "DispatchOutcome", "LAG_WARN_S", "LoadInterrupted", "LoadResult",
        "OpenAIEndpoint", "PromptSource", "SSEDecoder", "StreamRecord", "build_requests",
        "dispatch_open_loop", "is_token_chunk", "resolve_prompts", "run_load", "stream_request",
        "synthetic_prompt", "truncate_prompt",
    ],
    "greenllm.profiler.store": [
        "CarbonAtMeasurement", "CellUsage", "ENV_VAR", "GPURow", "GPUUsage", "LatencySummary",
        "ProfileRecord", "ProfileStore", "Provenance", "cell_id", "default_store_path",
        "export_csv", "export_json", "import_csv", "import_json", "qps_key", "read_nvidia_smi_csv",
        "record_from_vllm_bench", "request_rate", "size_label",
    ],
    "greenllm.profiler.sweep": [
        "Cell", "CellJob", "CellOutcome", "DEFAULT_NEW_GPU", "DEFAULT_REQUESTS", "DEFAULT_TARGET",
        "PAPER_DRAFTS", "PAPER_OLD_GPUS", "SIMULATED_BACKENDS", "SweepGrid", "SweepInterrupted",
        "SweepProgress", "SweepReport", "close_backends", "format_eta", "infeasible_sidecar_path",
        "measure", "paper_configurations", "parse_configurations", "ray_resources", "row_workload",
        "run_local", "run_ray", "run_sweep", "sample_cells", "sweep_measure",
    ],
    "greenllm.reproduce": [
        "Experiment", "analyse", "compare_draft_ahead", "run_cells", "summary_rows",
    ],
    "greenllm.serve": [
        "APIError", "ChatCompletionRequest", "CompletionRequest", "Controller",
        "ControllerSettings", "Deployment", "Device", "Finished", "FleetGateway", "Gateway",
        "GatewayMetrics", "GatewaySettings", "GenerationRequest", "LedgerTotals", "LoadMonitor",
        "Observation",
        "Receipt", "ReceiptLedger", "Replica", "SwitchRecord", "TokenChunk", "Upstream",
        "UpstreamError", "UpstreamStats", "bind_socket", "create_app", "parse_request",
        "run_server",
    ],
    "greenllm.fleet": [
        "CustomModel", "DEFAULT_PRICE_PER_HOUR", "FleetPlan", "FleetProblem", "FleetSolution",
        "FleetSpec", "GPUEntry", "GPUSpecEntry", "InfeasibleFleetError", "LEVELS", "LinkEntry",
        "ModelsEntry", "ReplicaModel", "WorkloadEntry", "build_problem",
        "candidate_configurations", "compare_fleet", "declare", "deployment", "embodied_g_per_h",
        "fits", "load_fleet",
        "model_from_hf_config", "newest_type", "paper_rule", "pareto", "parse_fleet", "plan_fleet",
        "replica_models", "restricted", "simulated_attainment", "solve", "standalone_new",
        "workload_application",
    ],
    "greenllm.serve.replay": [
        "HourOutcome", "PolicyOutcome", "ReplayDay", "ReplayHour", "ReplayReport", "plan_day",
        "plot_replay", "replay", "sample_offset_s", "serve_day", "static_choice",
    ],
    "greenllm.serve.upstreams": [
        "UPSTREAMS", "upstream_class",
    ],
    "greenllm.scheduler": [
        "ALSFactorization", "BiasBaseline", "ColumnMean", "CompletionEstimator", "CompletionResult",
        "Decision", "HourlyPlan", "Hysteresis", "METHODS", "PRIORITIES", "Plan", "PlanEntry",
        "PlanTable", "Planner", "ProfileMatrices", "RowKey", "SGDFactorization", "SoftImpute",
        "SurpriseSVD", "complete", "complete_attainment", "complete_carbon",
        "complete_with_uncertainty", "decide", "matrices_from_store", "plan_hourly", "schedule",
        "schedule_with_margin", "select_rank", "surprise_available",
    ],
    "greenllm.scheduler.completion": [],
    "greenllm.speculation": [
        "AHEAD_MIN_FULL_ROUNDS", "AdaptiveK", "AheadKey", "DraftAheadCache", "ForwardCost",
        "ahead_hit_rate", "expected_tokens", "worth_ahead",
    ],
    "greenllm.workloads": [
        "APPLICATIONS", "Application", "RequestSet", "TRACES", "TraceSpec", "TraceStats",
        "approx_token_count", "get_application", "humaneval_prompts", "humaneval_requests",
        "list_applications", "list_traces", "load_trace", "paper_qps_range", "poisson_arrivals_s",
        "register_application", "trace_stats", "workload",
    ],
    "greenllm.config": [
        "ConfigKind", "Configuration", "FrozenModel", "ID_FIELDS", "ID_VERSION", "ModelSpec",
        "RequestSize", "RequestSizeDistribution", "SLO", "Workload",
    ],
    "greenllm.errors": [
        "BackendClosedError", "BackendUnavailableError", "ConfigError", "GreenLLMError",
        "InfeasibleError", "ProfileError", "WorkerError", "missing_extra",
    ],
    "greenllm.lazy": [
        "lazy_exports",
    ],
    "greenllm.slo": [
        "RequestTimings", "inter_token_gaps", "slo_attainment", "slo_attainment_per_token",
    ],
    "greenllm.units": [
        "G_PER_KG", "J_PER_KWH", "MAX_DEVICE_LIFETIME_YEARS", "MAX_DEVICE_POWER_W",
        "MAX_EMBODIED_G", "MAX_ENERGY_J", "MAX_EXACT_COUNT", "MAX_INTENSITY_G_PER_KWH",
        "MAX_LIFETIME_YEARS", "MAX_PERIOD_S", "MAX_PUE", "MAX_QPS", "MAX_REPLAY_SPEED",
        "MAX_REQUESTS", "MAX_TIME_S", "MAX_TOKENS", "MIN_LIFETIME_YEARS", "MIN_QPS",
        "SECONDS_PER_HOUR", "SECONDS_PER_YEAR",
    ],
    "greenllm.version": [
        "__version__",
    ],
}


@pytest.mark.parametrize("namespace", sorted(PUBLIC_API))
def test_public_api_is_pinned(namespace: str) -> None:
    assert sorted(importlib.import_module(namespace).__all__) == PUBLIC_API[namespace]


def test_every_namespace_is_pinned() -> None:
    from tests.test_architecture import NAMESPACES

    assert sorted([*NAMESPACES, "greenllm"]) == sorted(PUBLIC_API)
