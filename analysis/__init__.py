"""Results folder -> pandas -> statistics across seeds -> plots -> a self-contained report.

`load` reads run folders (refusing unknown schema versions), `stats` holds the seed statistics,
`speedup` the loss-vs-budget law and the end-of-schedule speedup, `compare` turns a folder into per-arm figures against the baseline, `plots` draws them and
`report` writes report.html / report.md (`python -m analysis.report results/<suite>`).
"""

from .compare import Comparison, compare
from .load import SCHEMA_VERSION, ResultsError, load_runs, load_tuning

__all__ = ["Comparison", "compare", "SCHEMA_VERSION", "ResultsError", "load_runs", "load_tuning"]
