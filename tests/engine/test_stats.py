"""Engine counters: combining workers' reports, a dead sender counted from its receiver."""

from __future__ import annotations

from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    EngineStats,
)


def test_engine_stats_combine_counts_dead_sender_from_receiver() -> None:
    new = {"role": "dsd_target", "busy_s": 1.5, "proposed": 40, "accepted": 30, "steps": 10,
           "bytes_sent": {"control": 100, "header": 960},
           "bytes_received": {"ids": 320, "probs": 40960, "header": 1920}}  # fmt: skip
    stats = EngineStats.combine("dsd", [("new", new, True), ("old", {"role": "dsd_draft"}, False)])
    assert stats.bytes_new_to_old == {"control": 100, "header": 960}
    assert stats.bytes_old_to_new == {"ids": 320, "probs": 40960, "header": 1920}
    assert stats.acceptance_rate == 0.75 and stats.verify_steps == 10
    assert stats.link_bytes == 100 + 960 + 320 + 40960 + 1920
    assert stats.busy_s("new") == 1.5 and stats.busy_s("old") == 0.0
    assert [w.alive for w in stats.workers] == [True, False]
