"""`python -m frugal_lm.evals.lm_eval_cli ARGS`: lm-eval-harness's own command line, with the
`frugal` model type registered first (lm-eval 0.4.13 has no plugin discovery, so its
`lm_eval` script cannot find models from other packages). ARGS are exactly lm_eval's:

    python -m frugal_lm.evals.lm_eval_cli --model frugal --model_args model=runs/demo --tasks arc_easy
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.exit("lm-eval is not installed: pip install 'frugal-lm[lm-eval]'")
    import frugal_lm.evals.lm_eval_adapter  # noqa: F401  (registers --model frugal)

    cli_evaluate()


if __name__ == "__main__":
    main()
