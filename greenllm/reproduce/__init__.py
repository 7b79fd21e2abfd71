"""The paper's evaluation (Section 7), reproduced on any backend (the simulator by default)."""

from greenllm.reproduce.draft_ahead import compare_draft_ahead
from greenllm.reproduce.grid import run_cells
from greenllm.reproduce.report import Experiment, analyse, summary_rows

__all__ = ["Experiment", "analyse", "compare_draft_ahead", "run_cells", "summary_rows"]
