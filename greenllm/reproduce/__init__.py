"""The paper's evaluation (Section 7), reproduced on any backend (the simulator by default)."""

from greenllm.reproduce.grid import Cell, paper_configurations, run_cells
from greenllm.reproduce.report import Experiment, analyse, summary_rows

__all__ = ["Cell", "Experiment", "analyse", "paper_configurations", "run_cells", "summary_rows"]
