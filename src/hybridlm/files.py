"""Writing files safely: atomically (temp file + rename) and never through a symbolic link."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hybridlm.errors import UserError


def refuse_symlink(path: Path) -> Path:
    """A path hlm is about to write must not be a symbolic link (it would write elsewhere)."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; hlm does not write through links (remove it, or copy the run)")
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename, so a
    kill leaves either the old file or the new one, never a part."""
    path = refuse_symlink(Path(path))
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
