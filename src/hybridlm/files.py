"""Writing files safely: atomically (temp file + rename) and never through a symbolic link."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from hybridlm.errors import UserError


def refuse_symlink(path: Path) -> Path:
    """A path hlm is about to write must not be a symbolic link (it would write elsewhere)."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; hlm does not write through links (remove it, or copy the run)")
    return path


# the files of a tokenizer or model folder (an export, a tokenizer, a run): never an output's name
OWN_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "hybridlm.json",
    "manifest.json",
    "metrics.jsonl",
)


def folder_kind(folder: Path) -> str | None:
    """'run' or 'prepared data' when `folder` is one of those hlm folders, else None."""
    folder = Path(folder)
    if (folder / "config.json").is_file() and (
        (folder / "checkpoints").is_dir() or (folder / "metrics.jsonl").is_file()
    ):
        return "run"
    if (folder / "manifest.json").is_file():
        return "prepared data"
    return None


def inside_hlm_folder(path) -> tuple[Path, str] | None:
    """The run or prepared-data folder that `path` is in (or is), if any."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        kind = folder_kind(folder)
        if kind:
            return folder, kind
    return None


def check_out_folder(out, busy: str = "choose a new --out", ignore=()) -> None:
    """An --out folder hlm may fill: absent or empty (names in `ignore` aside), never a file or a link.
    busy: what to say when it holds files."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} is not a folder; choose a new --out")
    if out.is_dir() and any(p.name not in ignore for p in out.iterdir()):
        raise UserError(f"--out {out} is not empty; {busy}")


def check_output_file(path, flag: str = "--json") -> None:
    """An output file never lands on an input: not inside a run or prepared data (their own files,
    whatever the name), never named as a tokenizer's or model's own file."""
    path = Path(path)
    found = inside_hlm_folder(path.parent)
    if found:
        folder, kind = found
        raise UserError(
            f"{flag} {path} is inside the {kind} folder {folder}, whose files hlm manages (a run keeps its "
            f"results in RUN/eval/ by itself); write it elsewhere"
        )
    if path.name in OWN_FILES and (path.parent / "tokenizer.json").is_file():
        raise UserError(
            f"{flag} {path} would replace a file of the model or tokenizer in {path.parent}; write it elsewhere"
        )


def no_space(path, e: BaseException) -> UserError | None:
    """A full disk or a file-size limit, as one line naming where (None for other errors). Also
    read from the "(os error N)" of errors raised in Rust (safetensors, tokenizers)."""
    code = getattr(e, "errno", None)
    if code is None and (m := re.search(r"os error (\d+)", str(e))):
        code = int(m.group(1))
    if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return UserError(
            f"could not write {path}: {os.strerror(code).lower()} (a full disk or a file-size limit); "
            "free space and run it again (nothing already there was changed)"
        )
    return None


def temp_file(folder: Path, name: str) -> tuple[int, Path]:
    """A new file for `name`'s next version, in `folder`: an unpredictable name, created exclusively
    (O_EXCL: a link planted there is never followed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    return fd, Path(tmp)


def refuse_links_in(folder, flag: str = "--out") -> None:
    """A folder hlm is about to (re)write must not be, or hold, a symbolic link: writing there
    would change files elsewhere."""
    folder = Path(folder)
    links = [p.name for p in folder.iterdir() if p.is_symlink()] if folder.is_dir() and not folder.is_symlink() else []
    if folder.is_symlink() or links:
        what = (
            f"{folder} is a symbolic link"
            if folder.is_symlink()
            else f"{folder} holds symbolic links ({', '.join(sorted(links)[:3])})"
        )
        raise UserError(f"{flag}: {what}; hlm does not write through links (remove them, or choose a new {flag})")


DATA_LOCK = ".hlm-data-lock"


@contextlib.contextmanager
def data_lock(folder, exclusive: bool):
    """An advisory lock on a prepared-data folder: shared while a run reads it (every process),
    exclusive while `prepare --force` rewrites it, so that a rewrite never pulls the memory-mapped
    shards from under a trainer (SIGBUS). Released by the OS when a process dies; a folder hlm
    cannot write to is not locked (nor can hlm rewrite it)."""
    import fcntl

    try:
        fd = os.open(Path(folder) / DATA_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder} is being read by a training run; let it finish (or stop it) before rewriting the "
                "data, or prepare into a new --out"
                if exclusive
                else f"{folder} is being rewritten by hlm prepare; train once it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def building(out: Path):
    """A new folder OUT built under a temporary name beside it and renamed into place when complete:
    a kill or an error leaves nothing at OUT (an empty OUT that existed is replaced), and when
    another process fills OUT meanwhile this one fails instead of mixing files."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".incomplete", dir=out.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, out)  # replaces an empty folder, never a filled one
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise UserError(f"{out} was filled by another process meanwhile; choose a new --out") from None
            raise no_space(out, e) or e from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename, so a
    kill leaves either the old file or the new one, never a part; a failure leaves no temporary file."""
    path = refuse_symlink(Path(path))
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, a kill: no temporary file stays, the old file is untouched
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and (err := no_space(path, e)):
            raise err from None
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path, what: str = "file") -> object:
    """JSON from `path`, or a one-line error naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {path} is corrupt ({str(e).splitlines()[0][:80]}); restore it or delete it") from None


def read_jsonl(path):
    """("file:line", object) for each non-blank line of a JSONL file; a line that is not UTF-8, not
    JSON or not an object is a one-line error naming the file and line."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where}: not UTF-8 (byte {e.start}); re-encode the file") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: each line must be a JSON object")
            yield where, row
