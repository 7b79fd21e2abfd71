"""`greenllm fleet plan|compare`: a small fleet end to end (JSON deployment, table, the
comparison with the baselines), the deployment served by `greenllm serve --deployment` to a
real `openai` client, and one-line errors for bad fleet files."""

from __future__ import annotations

import pytest

from tests.cli.helpers import assert_error, run, strict_json
from tests.fleet.test_plan import SMALL


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "fleet.toml"
    path.write_text(SMALL)
    return path


def test_plan_writes_a_deployment_and_compare_adds_the_baselines(capsys, fleet_file,
                                                                 tmp_path) -> None:  # fmt: skip
    store = tmp_path / "sim.sqlite"
    base = ["--fleet", str(fleet_file), "--store", str(store), "--duration-s", "20"]
    out = tmp_path / "deployment.json"
    code, text, err = run(capsys, ["fleet", "plan", *base, "--json", "--out", str(out)])
    assert code == 0, err
    dep = strict_json(text)
    assert dep == strict_json(out.read_text())
    assert dep["objective"] == "carbon" and dep["replicas"] and dep["split"]["chat"]
    assert sum(s["qps"] for s in dep["split"]["chat"]) == pytest.approx(1.0)
    code, table, err = run(capsys, ["fleet", "plan", *base, "--objective", "cost"])
    assert code == 0, err
    assert "objective cost" in table and "off:" in table
    code, text, err = run(capsys, ["fleet", "compare", *base, "--json"])
    assert code == 0, err
    result = strict_json(text)
    assert set(result) == {"optimum", "paper_rule", "paper_rule_fitted", "standalone_new",
                           "min_cost", "pareto"}
    costs = [q["cost_per_h"] for q in result["pareto"]]
    assert costs == sorted(costs) and costs[0] == pytest.approx(result["min_cost"]["cost_per_h"])
    assert 0 <= result["optimum"]["slo_attainment"]["all"] <= 1
    code, table, err = run(capsys, ["fleet", "compare", *base])
    assert code == 0, err
    assert "paper_rule" in table and "SLO att." in table and "Pareto" in table


def test_bad_fleets_are_one_line_errors(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("qps = 1.0", "qps = 0"))
    assert_error(capsys, ["fleet", "plan", "--fleet", str(bad)], 2, "workloads[0].qps")
    assert_error(capsys, ["fleet", "plan", "--fleet", str(tmp_path / "none.toml")], 2,
                 "no such file")  # fmt: skip
    heavy = tmp_path / "heavy.toml"
    heavy.write_text(SMALL.replace("qps = 1.0", "qps = 40.0"))
    assert_error(capsys, ["fleet", "plan", "--fleet", str(heavy), "--store",
                          str(tmp_path / "s.sqlite"), "--duration-s", "10"], 2,
                 "cannot carry the load")  # fmt: skip


def test_serve_a_planned_deployment(capsys, fleet_file, tmp_path) -> None:
    """`fleet plan --out` then `serve --deployment`: the workload is the model name, the
    receipt names a configuration of the deployment, Ctrl-C drains and exits 130."""
    import signal

    from tests.extras import require
    from tests.serve.fakes import ServeProcess

    openai = require("openai")
    dep = tmp_path / "deployment.json"
    code, _, err = run(capsys, ["fleet", "plan", "--fleet", str(fleet_file), "--store",
                                str(tmp_path / "s.sqlite"), "--duration-s", "20", "--out",
                                str(dep)])  # fmt: skip
    assert code == 0, err
    labels = {r["label"] for r in strict_json(dep.read_text())["replicas"]}
    srv = ServeProcess("--backend", "sim", "--deployment", str(dep), "--time-scale", "50")
    try:
        assert "deployment:" in srv.stderr() and "chat" in srv.stderr()
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["chat"]
        out = client.completions.create(model="chat", prompt="one two", max_tokens=4)
        receipt = out.usage.model_extra["greenllm"]
        assert receipt["configuration"] in labels and receipt["total_g"] > 0
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="llama-2-7b", prompt="x", max_tokens=2)
        srv.proc.send_signal(signal.SIGINT)
        code, log = srv.wait()
        assert code == 130, log
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    bad = tmp_path / "bad.json"
    bad.write_text('{"replicas": [{"workload": "chat"}]}')
    assert_error(capsys, ["serve", "--backend", "sim", "--deployment", str(bad)], 2,
                 "not a deployment")  # fmt: skip
