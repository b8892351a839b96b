import io

import numpy as np
import pytest

from frugal_lm.data.arrays import NpyWriter, iter_npy_chunks, npy_length, raw_to_npy


@pytest.mark.parametrize("dtype, length", [(np.uint16, 10_000), (np.uint32, 7), (np.int64, 0)])
def test_chunked_files_are_byte_identical_to_np_save(tmp_path, dtype, length):
    values = np.random.default_rng(0).integers(0, 60_000, length).astype(dtype)
    reference = io.BytesIO()
    np.save(reference, values)
    with NpyWriter(tmp_path / "a.npy", dtype, length) as writer:
        for start in range(0, length, 999):
            writer.write(values[start : start + 999].astype(np.int64))  # cast on the way in
    assert (tmp_path / "a.npy").read_bytes() == reference.getvalue()
    assert npy_length(tmp_path / "a.npy") == length
    chunks = list(iter_npy_chunks(tmp_path / "a.npy", chunk=1000))
    assert all(len(c) <= 1000 for c in chunks)
    assert np.array_equal(np.concatenate(chunks) if chunks else np.zeros(0, dtype), values)
    values.astype(np.uint32).tofile(tmp_path / "a.raw")
    raw_to_npy(tmp_path / "a.raw", tmp_path / "b.npy", np.uint32, dtype)
    assert (tmp_path / "b.npy").read_bytes() == reference.getvalue()


def test_writer_refuses_the_wrong_count(tmp_path):
    with pytest.raises(ValueError, match="3 elements written, 4 announced"):
        with NpyWriter(tmp_path / "a.npy", np.uint16, 4) as writer:
            writer.write(np.arange(3))
    with pytest.raises(ValueError, match="more than the 2 elements"):
        NpyWriter(tmp_path / "b.npy", np.uint16, 2).write(np.arange(3))
    np.save(tmp_path / "c.npy", np.arange(10, dtype=np.uint16))
    (tmp_path / "c.npy").write_bytes((tmp_path / "c.npy").read_bytes()[:-4])
    with pytest.raises(ValueError, match="ends 2 elements early"):
        list(iter_npy_chunks(tmp_path / "c.npy", chunk=4))
