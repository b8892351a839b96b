import errno
import os
import stat

import pytest

from frugal_lm.errors import FrugalError
from frugal_lm.files import (
    os_errors_as_user_errors,
    read_output_marker,
    record_output,
    staged_output,
    write_atomically,
    write_text_atomically,
)


def test_writes_and_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text_atomically(path, "first ü\n")
    write_text_atomically(path, "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_then_fail(temporary):
        temporary.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_new_files_get_the_umask_mode_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "out.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def _build(staging, name="result.txt"):
    (staging / name).write_text("new")


def test_staged_output_refuses_a_folder_it_did_not_write_and_changes_nothing(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(
        FrugalError,
        match=r"--out .*precious: directory is not empty and was written by "
        r"something else, not `frugal test`",
    ):
        with staged_output(precious, "frugal test") as staging:
            _build(staging)
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]
    assert (precious / "thesis.txt").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FrugalError, match="exists and is not a directory"):
        with staged_output(tmp_path / "file", "frugal test"):
            pass


def test_staged_output_replaces_only_its_own_earlier_output(tmp_path):
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first's output
        with staged_output(out, "frugal test") as staging:
            _build(staging)
    assert read_output_marker(out) == {"command": "frugal test", "entries": ["result.txt"], "paths": ["result.txt"]}
    with pytest.raises(FrugalError, match="written by `frugal test`, not `frugal other`"):
        with staged_output(out, "frugal other"):
            pass
    (out / "notes.md").write_text("mine")  # the user's own file beside the output
    with pytest.raises(FrugalError, match="holds 'notes.md', which `frugal test` did not write"):
        with staged_output(out, "frugal test") as staging:
            _build(staging)
    assert (out / "notes.md").read_text() == "mine"


def test_staged_output_never_deletes_a_file_a_user_left_inside_one_of_its_folders(tmp_path):
    out = tmp_path / "out"

    def build(staging):
        (staging / "epoch_0").mkdir()
        (staging / "epoch_0" / "order.npy").write_bytes(b"x")

    with staged_output(out, "frugal test") as staging:
        build(staging)
    (out / "epoch_0" / "notes.md").write_text("mine")
    with pytest.raises(FrugalError, match="holds 'epoch_0/notes.md', which `frugal test` did not write"):
        with staged_output(out, "frugal test") as staging:
            build(staging)
    assert (out / "epoch_0" / "notes.md").read_text() == "mine"
    (out / "epoch_0" / "notes.md").unlink()
    with staged_output(out, "frugal test") as staging:  # its own output alone: replaced
        build(staging)
    # A marker from before paths were recorded still replaces by its top-level entries.
    record_output(out, "frugal test", ["epoch_0"])
    with staged_output(out, "frugal test") as staging:
        build(staging)
    assert read_output_marker(out)["paths"] == ["epoch_0", "epoch_0/order.npy"]


def test_staged_output_without_replace_own_refuses_even_its_own_earlier_output(tmp_path):
    out = tmp_path / "out"
    with staged_output(out, "frugal test", replace_own=False) as staging:
        _build(staging)
    assert read_output_marker(out)["entries"] == ["result.txt"]
    with pytest.raises(FrugalError, match="already exists and is not empty; `frugal test` replaces nothing"):
        with staged_output(out, "frugal test", replace_own=False) as staging:
            _build(staging, "second.txt")
    assert sorted(p.name for p in out.iterdir()) == [".frugal_output.json", "result.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_output_leaves_nothing_after_a_failure_and_clears_its_own_crash_leftover(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError):
        with staged_output(out, "frugal test") as staging:
            _build(staging)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    leftover = tmp_path / "out.partial"  # a killed run's staging folder, marked as the command's
    leftover.mkdir()
    record_output(leftover, "frugal test", [])
    (leftover / "half.bin").write_text("x")
    with staged_output(out, "frugal test") as staging:
        _build(staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    foreign = tmp_path / "other.partial"
    foreign.mkdir()
    with pytest.raises(FrugalError, match="other.partial exists and was not left by `frugal test`"):
        with staged_output(tmp_path / "other", "frugal test"):
            pass


def test_os_errors_become_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(FrugalError, match=r"^/x/y: Permission denied$"):
        with os_errors_as_user_errors(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", "/x/y")
    with pytest.raises(FrugalError, match=f"^{tmp_path}: No space left on device$"):
        with os_errors_as_user_errors(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")  # a write to an open file: no name
