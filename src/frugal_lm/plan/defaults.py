"""Planner defaults, apart from the arithmetic so `frugal --help` can show them without
importing torch."""

DEFAULT_LABEL_FRACTION = 0.6
"""Share of processed tokens that are response tokens (HRM-Text trains on responses only)."""
DEFAULT_MEAN_EXAMPLE_LEN = 1024
"""Assumed example length inside 2,048-token packed rows when no data set is given."""
DEFAULT_BATCH_TOKENS = 8192
"""Tokens per device per micro-batch (4 rows of 2,048). Sets the activation memory and the
step count the bp_steps warmup spans; at 16,384 the XL activations alone exceed 80 GB."""
DEFAULT_MFU = 0.42
"""Model FLOPs utilisation implied by the paper's runs (see `REFERENCE_RUNS`)."""
