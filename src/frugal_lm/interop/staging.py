"""Write an output directory all at once: into `OUT.partial`, then one rename.

A crash or a user error half-way leaves no directory that looks complete (the next run
clears the stale `.partial`), and an existing non-empty `OUT` is refused rather than
overwritten or mixed with new files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from frugal_lm.errors import FrugalError


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Yields the staging folder; on success it becomes `out`, on failure it is removed."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FrugalError(f"{out} already exists and is not empty; choose another --out or remove it")
    staging = out.resolve().with_name(out.resolve().name + ".partial")   # also for `--out .`-like paths
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
