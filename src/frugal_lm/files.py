"""Safe file and directory output: atomic writes, and output directories that are never someone else's.

Atomic files: output is written to a temporary file in the destination's folder (same
filesystem, so the final `os.replace` is atomic) and renamed over the destination; on any
failure, including Ctrl-C, the temporary file is removed and the destination is left as it was.

Output directories: a command that writes a directory (`--out DIR`) first puts a marker,
`DIR/.frugal_output.json`, naming the command and the entries it wrote. DIR must be new,
empty, or hold that command's own earlier output (its marker), so a mistyped `--out`
never deletes a thesis, an input, or another command's output. `staged_output` builds the
whole directory in `DIR.partial` (marked too, so a crashed run's leftover is recognised and
cleared) and swaps it in with one rename; it replaces an earlier output only if DIR holds
nothing the marker does not list, at any depth (the marker lists every path it wrote, so a
note a user left inside one of the output's folders is not deleted with it). A command whose
output is a deliverable (`frugal export hf`, `frugal import hf`) passes `replace_own=False`
and never replaces anything: its DIR must be new or empty. A `DIR.partial` that holds no
marker of the command (a user's own folder of that name) is refused, never deleted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from frugal_lm.errors import FrugalError

OUTPUT_MARKER = ".frugal_output.json"


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then move the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain exclusive open rather than mkstemp: mkstemp makes 0600 files, and a rename
    # would give the output that mode instead of the umask's usual 0644.
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "xb"):
            pass
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_output_marker(directory: Path) -> dict | None:
    """The marker a command left in `directory`, or None when it has none (or not one of ours)."""
    try:
        marker = json.loads((Path(directory) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(marker, dict)
        or not isinstance(marker.get("command"), str)
        or not isinstance(marker.get("entries"), list)
    ):
        return None
    # Only plain names inside the directory: an edited marker must not point a deletion elsewhere.
    marker["entries"] = [
        name
        for name in marker["entries"]
        if isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name
    ]
    paths = marker.get("paths")
    marker["paths"] = [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else None
    return marker


def _tree(directory: Path) -> set[str]:
    """Every file and folder under `directory`, as relative POSIX paths (links not followed)."""
    paths = set()
    for root, folders, files in os.walk(directory):
        relative = Path(root).relative_to(directory)
        paths.update((relative / name).as_posix() for name in (*folders, *files))
    return paths


def check_output_dir(out: Path, command: str, whole: bool = True, replace_own: bool = True) -> set[str]:
    """The entries `command` recorded in `out` (empty when `out` is new or empty); raise a
    FrugalError when `out` is a file or holds anything else. `whole`: the command replaces
    the directory as a whole, so every entry in it must be one the marker lists.
    `replace_own=False`: refuse any non-empty `out`, the command's own earlier output too."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FrugalError(f"--out {out}: exists and is not a directory")
    try:
        names = {entry.name for entry in out.iterdir()} if out.is_dir() else set()
    except OSError as error:
        raise FrugalError(f"--out {out}: cannot list it ({error.strerror})") from None
    if not names:
        return set()
    if not replace_own:
        raise FrugalError(
            f"--out {out}: already exists and is not empty; `{command}` replaces nothing: "
            f"choose another --out or remove it (nothing was changed)"
        )
    marker = read_output_marker(out)
    if marker is None or marker["command"] != command:
        written_by = f"`{marker['command']}`" if marker else "something else"
        raise FrugalError(
            f"--out {out}: directory is not empty and was written by {written_by}, not `{command}`; "
            f"choose another --out (nothing was changed)"
        )
    entries = {str(name) for name in marker["entries"]}
    foreign = sorted(names - entries - {OUTPUT_MARKER})
    if whole and not foreign and marker["paths"] is not None:
        foreign = sorted(_tree(out) - set(marker["paths"]) - {OUTPUT_MARKER})
    if whole and foreign:
        raise FrugalError(
            f"--out {out}: holds {foreign[0]!r}, which `{command}` did not write; "
            f"move it away or choose another --out (nothing was changed)"
        )
    return entries


def record_output(out: Path, command: str, entries: set[str] | list[str], paths: set[str] | None = None) -> None:
    """Write (or rewrite) the marker of `out`, listing what `command` wrote there: the
    top-level `entries` and, for an output replaced as a whole, every path under them."""
    marker: dict = {"command": command, "entries": sorted(set(entries))}
    if paths is not None:
        marker["paths"] = sorted(paths)
    write_text_atomically(Path(out) / OUTPUT_MARKER, json.dumps(marker, indent=1) + "\n")


@contextmanager
def staged_output(out: Path, command: str, replace_own: bool = True) -> Iterator[Path]:
    """Yield an empty, marked staging folder; when the block succeeds it replaces `out` (new,
    empty or, unless `replace_own` is False, `command`'s own earlier output; else refused
    before anything is written); when it fails the staging folder is removed and `out` is
    left as it was."""
    out = Path(out)
    check_output_dir(out, command, replace_own=replace_own)
    staging = out.resolve().with_name(out.resolve().name + ".partial")  # also for `--out .`-like paths
    if staging.exists():
        if (read_output_marker(staging) or {}).get("command") != command:
            raise FrugalError(f"{staging} exists and was not left by `{command}`; move it away (nothing was changed)")
        shutil.rmtree(staging)  # an interrupted earlier run of the same command
    staging.mkdir(parents=True)
    try:
        record_output(staging, command, [])  # marked from the start: a crash leaves a recognisable folder
        yield staging
        record_output(
            staging,
            command,
            {entry.name for entry in staging.iterdir()} - {OUTPUT_MARKER},
            _tree(staging) - {OUTPUT_MARKER},
        )
        if out.exists():
            shutil.rmtree(out)  # checked above: empty, or only what `command` wrote
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def os_errors_as_user_errors(where: Path | str) -> Iterator[None]:
    """Turn an OSError (permission denied, disk full, ...) into a one-line FrugalError naming
    the file, or `where` when the error has no file name (a write to an open file)."""
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away: the CLI ends quietly, it is not an error in a file
    except OSError as error:
        raise FrugalError(f"{error.filename or where}: {error.strerror or error}") from None
