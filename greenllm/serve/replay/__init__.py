"""Replay a day: real request traces and hourly grid intensity through the gateway on the
simulator, live re-planning beside the paper's static plan and Standalone.

>>> from greenllm.serve.replay import plan_day, replay
>>> day = plan_day("conversation", "CISO", hours=24, qps=2.0)     # doctest: +SKIP
>>> report = replay(day, table)                                    # doctest: +SKIP
"""

from greenllm.serve.replay.day import ReplayDay, ReplayHour, plan_day, sample_offset_s
from greenllm.serve.replay.report import ReplayReport, plot_replay, replay
from greenllm.serve.replay.run import HourOutcome, PolicyOutcome, serve_day, static_choice

__all__ = [
    "HourOutcome",
    "PolicyOutcome",
    "ReplayDay",
    "ReplayHour",
    "ReplayReport",
    "plan_day",
    "plot_replay",
    "replay",
    "sample_offset_s",
    "serve_day",
    "static_choice",
]
