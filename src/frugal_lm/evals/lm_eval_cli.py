"""`python -m frugal_lm.evals.lm_eval_cli ARGS`: lm-eval-harness's own command line, with the
`frugal` model type registered first (lm-eval 0.4.13 has no plugin discovery, so its
`lm_eval` script cannot find models from other packages). ARGS are exactly lm_eval's:

    python -m frugal_lm.evals.lm_eval_cli --model frugal --model_args model=runs/demo --tasks arc_easy

lm-eval's `--device` defaults to `cuda:0`; without a CUDA device and without `--device`, this
wrapper passes `--device cpu`, so a CPU machine runs without a warning about a missing GPU.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.exit("lm-eval is not installed: pip install 'frugal-lm[lm-eval]'")
    import frugal_lm.evals.lm_eval_adapter  # noqa: F401  (registers --model frugal)

    sys.argv[1:] = with_default_device(sys.argv[1:])
    cli_evaluate()


def with_default_device(arguments: list[str]) -> list[str]:
    """`arguments` plus `--device cpu` when they name no device and there is no CUDA device."""
    import torch

    if any(a == "--device" or a.startswith("--device=") for a in arguments) or torch.cuda.is_available():
        return arguments
    return [*arguments, "--device", "cpu"]


if __name__ == "__main__":
    main()
