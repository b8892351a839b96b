import pytest

from frugal_lm.data.batch import IGNORE_INDEX
from frugal_lm.data.loader import LoaderState, MixedDataset, PackedLoader
from frugal_lm.errors import FrugalError


def examples_in(batch):
    """Example ids (the instruction's token value) present in a batch."""
    first_tokens = batch.input_ids[(batch.position_ids == 0) & (batch.segment_ids >= 0)]
    return sorted(first_tokens.tolist())


def test_every_example_once_per_epoch_across_ranks(tmp_path, write_mixed_set):
    dataset = MixedDataset(write_mixed_set(tmp_path / "mix"))
    loaders = [PackedLoader(dataset, row_len=16, rows_per_rank=2, rank=r, world_size=2) for r in range(2)]
    assert loaders[0].steps_in(0) == loaders[1].steps_in(0)
    seen = []
    for step in range(loaders[0].steps_in(0)):
        for loader in loaders:
            batch = loader.batch(LoaderState(0, step))
            assert batch.input_ids.shape == (2, 16)
            seen += examples_in(batch)
    assert sorted(seen) == list(range(40))


def test_batches_carry_the_prefix_lm_layout(tmp_path, write_mixed_set):
    dataset = MixedDataset(write_mixed_set(tmp_path / "mix"))
    batch = PackedLoader(dataset, row_len=16, rows_per_rank=1).batch(LoaderState(0, 0))
    # Labels only on response tokens, which are the 1000+k values.
    labelled = batch.labels[batch.labels != IGNORE_INDEX]
    assert (labelled >= 1000).all()
    assert (batch.input_ids[batch.prefix_mask] < 1000).all()


def test_resume_from_any_state_continues_the_same_sequence(tmp_path, write_mixed_set):
    dataset = MixedDataset(write_mixed_set(tmp_path / "mix"))
    loader = PackedLoader(dataset, row_len=16, rows_per_rank=1)
    straight = list(loader.batches(LoaderState(), epochs=2))
    middle = len(straight) // 2 + 1
    resumed = list(loader.batches(straight[middle - 1][1], epochs=2))
    assert len(resumed) == len(straight) - middle
    for (a, state_a), (b, state_b) in zip(straight[middle:], resumed):
        assert (a.input_ids == b.input_ids).all() and state_a == state_b
    assert straight[-1][1].epoch == 1  # crossed into the second epoch


def test_bad_sets_give_one_line_errors(tmp_path, write_mixed_set):
    with pytest.raises(FrugalError, match="no metadata.json"):
        MixedDataset(tmp_path)
    directory = write_mixed_set(tmp_path / "mix")
    (directory / "epoch_0" / "resp_len.npy").unlink()
    with pytest.raises(FrugalError, match="resp_len.npy: missing"):
        MixedDataset(directory).epoch(0)
    directory = write_mixed_set(tmp_path / "long")
    with pytest.raises(FrugalError, match="more than a row"):
        PackedLoader(MixedDataset(directory), row_len=4, rows_per_rank=1).steps_in(0)
