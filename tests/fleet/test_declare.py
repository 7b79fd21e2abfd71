"""What a fleet file declares works in every command: its own GPU (a data sheet), its own
model (a Hugging Face config.json), a declared acceptance rate and a workload with its own
sizes and SLO; without the file the same names are unknown."""

from __future__ import annotations

import contextlib
import json

import pytest

from greenllm.backends.sim import ACCEPTANCE_RATES, get_model
from greenllm.backends.sim.live import CONTEXT_TOKENS
from greenllm.backends.sim.models import unregister_model
from greenllm.carbon import get_gpu, unregister_gpu
from greenllm.errors import ConfigError
from greenllm.fleet import declare, load_fleet, model_from_hf_config
from greenllm.workloads import APPLICATIONS, get_application
from tests.cli.helpers import assert_error, run, strict_json

HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 12, "hidden_size": 768,
    "num_attention_heads": 12, "num_key_value_heads": 4, "intermediate_size": 2048,
    "vocab_size": 32000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16",
    "tie_word_embeddings": True,
}  # fmt: skip

FLEET = """
region = "CISO"
[models]
target = "llama-2-7b"
drafts = ["tinydraft"]
acceptance = { tinydraft = 0.55 }
[[models.custom]]
name = "tinydraft"
config_json = "tiny/config.json"
[[gpus]]
type = "A100"
count = 1
[[gpus]]
type = "Oldie32"
count = 2
[gpus.spec]
vram_gb = 32
mem_bw_gbs = 900
die_area_mm2 = 815
max_power_w = 300
node_nm = 12
fp16_tflops = 112
year = 2017
idle_power_w = 35
[[workloads]]
name = "notes"
qps = 0.5
sizes = { p25 = [300, 40], p50 = [600, 80], p75 = [1200, 160] }
ttft_s = 1.0
tpot_s = 0.1
"""


@pytest.fixture
def fleet_file(tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(HF_CONFIG))
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    yield path
    for undo in (lambda: unregister_gpu("Oldie32"), lambda: unregister_model("tinydraft"),
                 lambda: APPLICATIONS.pop("notes")):  # fmt: skip
        with contextlib.suppress(ConfigError, KeyError):
            undo()
    ACCEPTANCE_RATES.pop(("tinydraft", "llama-2-7b"), None)
    CONTEXT_TOKENS.pop("tinydraft", None)


def test_the_declarations_are_registered(fleet_file) -> None:
    added = declare(load_fleet(fleet_file))
    assert added == ["gpu:Oldie32", "model:tinydraft", "acceptance:tinydraft->llama-2-7b",
                     "application:notes"]  # fmt: skip
    gpu = get_gpu("oldie32")
    assert gpu.vram_gb == 32 and gpu.embodied_source == "act-estimate" and gpu.embodied_kg > 0
    model = get_model("tinydraft")
    assert (model.n_layers, model.n_kv_heads, model.bytes_per_param) == (12, 4, 2)
    assert model.tie_embeddings and CONTEXT_TOKENS["tinydraft"] == 2048
    assert ACCEPTANCE_RATES[("tinydraft", "llama-2-7b")] == 0.55
    app = get_application("notes")
    assert app.slo.ttft_s == 1.0 and app.p50.input_tokens == 600


def test_every_command_knows_them_with_the_global_fleet_option(capsys, fleet_file,
                                                               tmp_path) -> None:  # fmt: skip
    argv = ["profile", "--configs", "dsd:Oldie32:tinydraft", "--apps", "notes", "--qps", "0.5",
            "--requests", "20", "--store", str(tmp_path / "s.sqlite"), "--quiet", "--json"]
    assert_error(capsys, argv, 2, "Oldie32")  # unknown without the fleet file
    code, out, err = run(capsys, ["--fleet", str(fleet_file), *argv])
    assert code == 0, err
    assert strict_json(out)["measured"] == 1
    code, out, err = run(capsys, ["--fleet", str(fleet_file), "gpus", "--json"])
    assert code == 0, err
    assert "Oldie32" in json.dumps(strict_json(out))


def test_hf_configs_that_are_not_llama_shaped_are_errors(tmp_path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 10}))
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        model_from_hf_config("x", bad)
    with pytest.raises(ConfigError, match="no such file"):
        model_from_hf_config("x", tmp_path / "none.json")
    spec, ctx = model_from_hf_config("ok", _write(tmp_path, {**HF_CONFIG, "torch_dtype":
                                                             "float32"}))  # fmt: skip
    assert spec.bytes_per_param == 4 and ctx == 2048


def _write(tmp_path, data):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    return p
