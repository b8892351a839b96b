"""Shared fixtures: small data sets the tests write themselves (no downloads)."""

import json
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest


def _write_mixed_set(directory, n_examples=40, n_epochs=2, seed=0):
    """A mixed set in ARCHITECTURE.md's layout: example k is instruction [k]*a, response [1000+k]*b."""
    rng = np.random.default_rng(seed)
    tokens, inst_start, inst_len, resp_start, resp_len = [], [], [], [], []
    for k in range(n_examples):
        a, b = int(rng.integers(1, 8)), int(rng.integers(1, 6))
        inst_start.append(len(tokens))
        inst_len.append(a)
        tokens += [k] * a
        resp_start.append(len(tokens))
        resp_len.append(b)
        tokens += [1000 + k] * b
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "tokens.npy", np.array(tokens, dtype=np.uint16))
    for epoch in range(n_epochs):
        order = rng.permutation(n_examples)
        folder = directory / f"epoch_{epoch}"
        folder.mkdir()
        for name, values in [
            ("inst_start", inst_start),
            ("inst_len", inst_len),
            ("resp_start", resp_start),
            ("resp_len", resp_len),
        ]:
            np.save(folder / f"{name}.npy", np.array(values, dtype=np.int64)[order])
    (directory / "metadata.json").write_text(
        json.dumps({"vocab_size": -(-(1000 + n_examples) // 256) * 256, "max_seq_len": 12})
    )
    return directory


@pytest.fixture
def write_mixed_set():
    """Writes a mixed training set in ARCHITECTURE.md's layout; example k is instruction [k]*a,
    response [1000+k]*b, so tests can tell examples apart by their tokens."""
    return _write_mixed_set


TINY_MODEL = ["model.hidden_size=32", "model.n_heads=2", "model.n_layers=2", "model.max_seq_len=64"]


def _train_tiny_run(root, net="hrm", steps=3, overrides=()):
    """synth -> tokenizer -> tokenize -> mix -> a few training steps of a tiny net; the run dir."""
    from frugal_lm.config import resolve_run_config
    from frugal_lm.data.mix import mix
    from frugal_lm.data.synth import write_synthetic
    from frugal_lm.data.tokenize import tokenize_sources
    from frugal_lm.data.tokenizer import train_tokenizer
    from frugal_lm.train.trainer import train

    paths = write_synthetic(root / "synth", ["addition", "reversal"], 80, 10, seed=0)
    texts = (
        t
        for path in paths.values()
        for row in map(json.loads, path.read_text().splitlines())
        for t in (row["instruction"], row["response"])
    )
    train_tokenizer(texts, vocab_size=300).save(root / "tok")
    tokenize_sources(root / "tok", root / "tokenized", [paths["train"]])
    mix(root / "tokenized", root / "mix", None, 1, 64, 0)
    config = resolve_run_config(
        None,
        [
            f"data={root / 'mix'}",
            f"out={root / 'run'}",
            f"net={net}",
            f"steps={steps}",
            "batch_tokens=256",
            "warmup_steps=0",
            "precision=fp32",
            "lr=3e-3",
            *TINY_MODEL,
            *overrides,
        ],
    )
    train(config)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained tiny HRM run directory (tokenizer, checkpoint, EMA); shared, do not modify."""
    return _train_tiny_run(tmp_path_factory.mktemp("tiny_hrm"), "hrm")


@pytest.fixture(scope="session")
def tiny_moe_run(tmp_path_factory):
    """A tiny HRM with a mixture of experts (4 experts, top 2, a shared one), trained 2 steps."""
    moe = ["model.moe.experts=4", "model.moe.top_k=2", "model.moe.intermediate_size=32", "model.moe.shared_experts=1"]
    return _train_tiny_run(tmp_path_factory.mktemp("tiny_moe"), "hrm", steps=2, overrides=moe)


@pytest.fixture(scope="session")
def tiny_transformer_run(tmp_path_factory):
    """The same, for net=transformer."""
    return _train_tiny_run(tmp_path_factory.mktemp("tiny_transformer"), "transformer")


@contextmanager
def running_server(loaded, max_batch_size=4, max_queue=32, limits=None):
    """A real uvicorn serving a fresh Engine on `loaded` at 127.0.0.1:<free port>, in a thread:
    yields (root URL, the app's server state, the uvicorn server)."""
    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.http_limits import HttpLimits
    from frugal_lm.infer.http_server import bind_socket, uvicorn_server
    from frugal_lm.infer.server import create_app

    limits = limits or HttpLimits()
    engine = Engine(loaded, max_batch_size=max_batch_size)
    app = create_app(engine, "tiny", max_queue=max_queue, limits=limits)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn_server(app, sock, log_level="warning", limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.server, server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def _serving(run_dir):
    from frugal_lm.infer.loading import load_model

    with running_server(load_model(run_dir)) as (url, _, _):
        yield f"{url}/v1"


@pytest.fixture
def serving():
    """`with serving(run_dir) as url:` the `frugal serve` app over real HTTP on loopback."""
    return _serving
