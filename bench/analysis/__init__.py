"""Comparisons, as pure functions of the results DataFrame (one row per record).

Cells are compared only within a group of identical workloads: same model and same workload
fingerprint. Repeats of one configuration are aggregated before any ratio is taken.

The modules: `stats` (intervals and tests), `frame` (keys, groups, baseline), `speed`
(throughput and speedups), `quality` (quality deltas, AMP and DDP-vs-DP pairs), `convergence`
(time to a quality target, speedup at equal quality, the convergence check), `compare` (the
whole `Comparison`) and `gate` (the regression gate). Nothing here reads a file: the artefacts
beside the records are read by `bench.record.load`. The names below are the package's API.
"""
from bench.analysis.compare import Comparison, compare_configs, failures, notes, summary_table
from bench.analysis.convergence import ALPHA, convergence_test, curves, equal_quality, targets
from bench.analysis.frame import (AMP_PRECISIONS, BASELINE, CELL_KEYS, CONFIG_KEYS, GROUP_KEYS,
                                  HIGHER_IS_BETTER, QUALITY_METRICS, Baseline, Margins,
                                  config_label, lowest_repeats, noise_label, ok_rows,
                                  parse_baseline, prepare, sample_cells)
from bench.analysis.quality import amp_gain, ddp_vs_dp, quality_deltas, quality_long
from bench.analysis.speed import config_stats, speedups
from bench.analysis.stats import (CONFIDENCE, INCONCLUSIVE, difference, mean_ci, paired_test,
                                  ratio, verdict, welch_test)

__all__ = [
    "ALPHA", "convergence_test", "curves", "equal_quality", "targets",
    "AMP_PRECISIONS", "BASELINE", "CELL_KEYS", "CONFIDENCE", "CONFIG_KEYS", "GROUP_KEYS",
    "HIGHER_IS_BETTER", "INCONCLUSIVE", "QUALITY_METRICS", "Baseline", "Comparison", "Margins",
    "amp_gain", "compare_configs", "config_label", "config_stats", "ddp_vs_dp", "difference",
    "failures", "lowest_repeats", "mean_ci", "noise_label", "notes", "ok_rows", "paired_test",
    "parse_baseline", "prepare", "quality_deltas", "quality_long", "ratio",
    "sample_cells", "speedups", "summary_table", "verdict", "welch_test",
]
