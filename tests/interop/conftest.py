"""Fixtures for the interop tests: an export of the trained tiny run, and random
transformers HrmTextForCausalLM directories (the independent reference)."""

import shutil

import pytest
import torch

from frugal_lm.data.records import Record


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine the
    thread hand-offs cost 10x (measured); restored afterwards for the other test packages."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """`frugal export hf` of the trained tiny HRM run (EMA weights); read-only."""
    from frugal_lm.interop import export_hf

    out = tmp_path_factory.mktemp("exported") / "hf"
    export_hf(tiny_run, out)
    return out


def tokenizer_dir(tiny_run):
    """The tokenizer the tiny run was trained with (a byte-level BPE with the HRM-Text special tokens)."""
    return tiny_run.parent / "tok"


def make_hf_model(directory, tokenizer_source, seed=0, max_shard_size=None, **overrides):
    """A randomly initialised HrmTextForCausalLM saved with save_pretrained, plus tokenizer.json.
    z_L_init (zeros in transformers' init) is randomised so the test sees it travel."""
    from tokenizers import Tokenizer
    from transformers import HrmTextConfig, HrmTextForCausalLM

    vocab = Tokenizer.from_file(str(tokenizer_source / "tokenizer.json")).get_vocab_size()
    settings = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=16,
        H_cycles=2,
        L_cycles=2,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        initializer_range=0.05,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = HrmTextForCausalLM(HrmTextConfig(**settings))
    with torch.no_grad():
        model.model.z_L_init.normal_()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(directory, **kwargs)
    shutil.copyfile(tokenizer_source / "tokenizer.json", directory / "tokenizer.json")
    return model.eval()


RECORDS = [
    Record("12+34=", "46", ("direct",)),
    Record("reverse hello world please", "esaelp", ("cot",)),
    Record("7", "1 2 3 4 5 6 7 8", ("direct",)),
]


def encoded_examples(tokenizer):
    """(instruction ids, response ids) of three examples of different lengths."""
    return tokenizer.encode_records(RECORDS)


def our_logits(model, examples):
    """Our model's logits (B, T, V), one example per row, right-padded, PrefixLM layout."""
    from frugal_lm.model import AttentionLayout

    lengths = [(len(i), len(r)) for i, r in examples]
    T = max(a + b for a, b in lengths)
    ids = torch.zeros(len(examples), T, dtype=torch.long)
    positions = torch.zeros(len(examples), T, dtype=torch.long)
    for row, (instruction, response) in enumerate(examples):
        sequence = instruction + response
        ids[row, : len(sequence)] = torch.tensor(sequence)
        positions[row, : len(sequence)] = torch.arange(len(sequence))
    with torch.no_grad():
        return model(ids, positions, AttentionLayout.from_lengths([[pair] for pair in lengths], T))


def hf_inputs(examples, pad_id):
    """Left-padded transformers inputs (as generate pads) with token_type_ids == 1 on the instruction."""
    T = max(len(i) + len(r) for i, r in examples)
    ids = torch.full((len(examples), T), pad_id)
    mask = torch.zeros(len(examples), T, dtype=torch.long)
    types = torch.zeros(len(examples), T, dtype=torch.long)
    for row, (instruction, response) in enumerate(examples):
        sequence = instruction + response
        start = T - len(sequence)
        ids[row, start:] = torch.tensor(sequence)
        mask[row, start:] = 1
        types[row, start : start + len(instruction)] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "position_ids": positions}


def max_logit_difference(ours_BTV, hf_BTV, examples):
    """Largest |difference| over the real tokens (ours right-padded, transformers left-padded)."""
    T = hf_BTV.shape[1]
    worst = 0.0
    for row, (instruction, response) in enumerate(examples):
        n = len(instruction) + len(response)
        worst = max(worst, (ours_BTV[row, :n] - hf_BTV[row, T - n :]).abs().max().item())
    return worst


@pytest.fixture(scope="session")
def ref():
    """The helpers above, for test modules (importlib import mode keeps conftest off sys.path)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        tokenizer_dir=tokenizer_dir,
        make_hf_model=make_hf_model,
        records=RECORDS,
        encoded_examples=encoded_examples,
        our_logits=our_logits,
        hf_inputs=hf_inputs,
        max_logit_difference=max_logit_difference,
    )
