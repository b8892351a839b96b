"""Shared fixtures: small data sets the tests write themselves (no downloads)."""

import json

import numpy as np
import pytest


def _write_mixed_set(directory, n_examples=40, n_epochs=2, seed=0):
    """A mixed set in DESIGN.md's layout: example k is instruction [k]*a, response [1000+k]*b."""
    rng = np.random.default_rng(seed)
    tokens, inst_start, inst_len, resp_start, resp_len = [], [], [], [], []
    for k in range(n_examples):
        a, b = int(rng.integers(1, 8)), int(rng.integers(1, 6))
        inst_start.append(len(tokens)); inst_len.append(a); tokens += [k] * a
        resp_start.append(len(tokens)); resp_len.append(b); tokens += [1000 + k] * b
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "tokens.npy", np.array(tokens, dtype=np.uint16))
    for epoch in range(n_epochs):
        order = rng.permutation(n_examples)
        folder = directory / f"epoch_{epoch}"
        folder.mkdir()
        for name, values in [("inst_start", inst_start), ("inst_len", inst_len),
                             ("resp_start", resp_start), ("resp_len", resp_len)]:
            np.save(folder / f"{name}.npy", np.array(values, dtype=np.int64)[order])
    (directory / "metadata.json").write_text(json.dumps({"vocab_size": -(-(1000 + n_examples) // 256) * 256, "max_seq_len": 12}))
    return directory



@pytest.fixture
def write_mixed_set():
    """Writes a mixed training set in DESIGN.md's layout; example k is instruction [k]*a,
    response [1000+k]*b, so tests can tell examples apart by their tokens."""
    return _write_mixed_set
