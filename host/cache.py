"""Content-hash caching: results are keyed by what they were made from, never by timestamps."""

import hashlib
import os
from pathlib import Path


def cache_dir(*parts):
    root = Path(os.environ.get("ROMA_CACHE", Path.home() / ".cache" / "roma"))
    d = root.joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def file_hash(path, algo="sha256"):
    """Hash of a file's bytes; memoised per (path, size, mtime) so a 100 MB model is hashed once."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, algo)
    if key not in _memo:
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _memo[key] = h.hexdigest()
    return _memo[key]


_memo = {}

REPO = Path(__file__).resolve().parent.parent
SOURCE_SUFFIXES = (".py", ".c", ".h", ".cpp", ".S", ".ld", "Makefile")


def tree_hash(paths, suffixes=SOURCE_SUFFIXES):
    """sha256 over the source files under `paths` (relative to the repository; files or folders), names and
    contents: what a gateware or firmware build is made from."""
    h = hashlib.sha256()
    for rel in paths:
        p = REPO / rel
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes)
                                                and "__pycache__" not in f.parts)
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def write_if_changed(path, data):
    """Write bytes or text only when they differ, so downstream builds stay incremental. Returns True if written."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
