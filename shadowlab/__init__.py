"""shadowlab: decide, from shadow-stage pair logs, whether a candidate model may go to canary.

The public API is re-exported here and loaded lazily (PEP 562), so ``import shadowlab`` stays
cheap for the CLI and for Spark workers; ``from shadowlab import calibrate_threshold`` imports
only what that function needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shadowlab._memory import keep_freed_memory
from shadowlab.schema import LABEL_SCHEMA, PAIR_SCHEMA, SCHEMA_VERSION

# numpy's per-chunk temporaries are reused instead of re-faulted (see shadowlab._memory)
keep_freed_memory()

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # logs and routing
    "scan_pairs": "logs", "scan_labels": "logs", "summarize_logs": "logs", "LogSummary": "logs",
    "LogValidationError": "logs", "PairLogWriter": "logs",
    "CanaryRouter": "router", "RouterConfig": "router", "SklearnModel": "router",
    "Model": "router", "Prediction": "router", "ServedModelError": "router",
    # synthetic week
    "simulate_week": "synth", "SimulatedWeek": "synth", "SCENARIOS": "synth",
    # engine
    "Aggregation": "engine", "as_source": "engine",
    # distributions
    "ks_2samp": "drift", "psi": "drift", "wasserstein_distance": "drift",
    "jensen_shannon": "drift", "quantile_table": "drift", "compare_scores": "drift",
    "ScoreSketch": "drift", "KSResult": "drift", "PSIResult": "drift",
    "DistributionComparison": "drift",
    # thresholds and accuracy
    "calibrate_threshold": "thresholds", "Capacity": "thresholds",
    "ThresholdCalibration": "thresholds",
    "operating_point_metrics": "accuracy", "OperatingPointMetrics": "accuracy",
    "reliability_curve": "accuracy", "expected_calibration_error": "accuracy",
    # downstream load
    "simulate_load": "load", "ReviewCapacity": "load", "LoadReport": "load", "erlang_c": "load",
    # feedback loop
    "feedback_diagnostics": "feedback", "FeedbackReport": "feedback",
    "audit_rate_needed": "feedback",
    # gate, policy, signing, report
    "run_gate": "gate", "GateVerdict": "gate", "CheckResult": "gate",
    "GatePolicy": "policy", "load_policy": "policy", "default_policy_toml": "policy",
    "PolicyError": "policy",
    "generate_keypair": "signing", "verify_envelope": "signing", "Verification": "signing",
    "build_report": "report", "write_report": "report", "Report": "report",
    "Progress": "progress",
}  # fmt: skip

__all__ = ["LABEL_SCHEMA", "PAIR_SCHEMA", "SCHEMA_VERSION", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shadowlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"shadowlab.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from shadowlab.accuracy import (
        OperatingPointMetrics,
        expected_calibration_error,
        operating_point_metrics,
        reliability_curve,
    )
    from shadowlab.drift import (
        DistributionComparison,
        KSResult,
        PSIResult,
        ScoreSketch,
        compare_scores,
        jensen_shannon,
        ks_2samp,
        psi,
        quantile_table,
        wasserstein_distance,
    )
    from shadowlab.engine import Aggregation, as_source
    from shadowlab.feedback import FeedbackReport, audit_rate_needed, feedback_diagnostics
    from shadowlab.gate import CheckResult, GateVerdict, run_gate
    from shadowlab.load import LoadReport, ReviewCapacity, erlang_c, simulate_load
    from shadowlab.logs import (
        LogSummary,
        LogValidationError,
        PairLogWriter,
        scan_labels,
        scan_pairs,
        summarize_logs,
    )
    from shadowlab.policy import GatePolicy, PolicyError, default_policy_toml, load_policy
    from shadowlab.progress import Progress
    from shadowlab.report import Report, build_report, write_report
    from shadowlab.router import (
        CanaryRouter,
        Model,
        Prediction,
        RouterConfig,
        ServedModelError,
        SklearnModel,
    )
    from shadowlab.signing import Verification, generate_keypair, verify_envelope
    from shadowlab.synth import SCENARIOS, SimulatedWeek, simulate_week
    from shadowlab.thresholds import Capacity, ThresholdCalibration, calibrate_threshold
