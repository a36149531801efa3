"""Where rollouts are read from: a file, standard input, a folder, or a remote store.

:func:`records` turns an input argument into numbered records, one per JSONL line or
Parquet row, each tagged with the file it came from, so that every error can name the
file and the line (or, for Parquet, the 1-based row). The paths it takes are the ones
Ray Data takes:

- ``-``: standard input (JSONL);
- a local file: ``rollouts.jsonl``, compressed ``.jsonl.gz`` / ``.bz2`` / ``.xz``
  (``.zst`` with pyarrow), or ``.parquet`` (with pyarrow);
- a local folder: every data file under it, in sorted path order, skipping names that
  start with ``.`` or ``_`` (``_SUCCESS``, ``.crc``: the convention of pyarrow datasets,
  Spark and Hadoop);
- a URI pyarrow opens (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``):
  a file or a folder, as above. Credentials and endpoints come from the store's usual
  environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...) or the URI's query
  (``s3://bucket/key?endpoint_override=host:9000&scheme=http``).

pyarrow comes with the ``ray`` extra; plain, gzip, bzip2 and xz files need nothing.
Line numbers count the decompressed text.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingExtraError

__all__ = ["DATA_SUFFIXES", "is_uri", "list_sources", "records"]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
DATA_SUFFIXES = (
    *JSONL_SUFFIXES,
    *(s + c for s in JSONL_SUFFIXES for c in COMPRESSIONS),
    ".parquet",
)
_STDLIB: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".xz": lzma.decompress,
}


def is_uri(path: str) -> bool:
    """Whether ``path`` names a store by scheme (``s3://...``) rather than a local path."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isalnum() and len(scheme) > 1


@dataclass(frozen=True)
class Source:
    """One file to read: its name for messages, and how to open it."""

    name: str
    fs: Any = None  # a pyarrow FileSystem for a URI, None for a local file or stdin
    path: str = ""  # the path inside ``fs``

    @property
    def parquet(self) -> bool:
        return self.name.split("?")[0].endswith(".parquet")

    def read_bytes(self) -> bytes:
        """The whole file, decompressed by its suffix."""
        suffix = "." + self.name.split("?")[0].rsplit(".", 1)[-1]
        try:
            if self.name == "-":
                return sys.stdin.buffer.read()
            if self.fs is not None:
                with self.fs.open_input_stream(self.path, compression="detect") as f:
                    return bytes(f.read())
            if suffix in COMPRESSIONS and suffix not in _STDLIB:  # zstd, lz4
                import pyarrow as pa  # type: ignore[import-untyped]

                with pa.input_stream(self.name, compression="detect") as f:  # by suffix
                    return bytes(f.read())
            data = Path(self.name).read_bytes()
            return _STDLIB[suffix](data) if suffix in _STDLIB else data
        except ImportError as e:
            raise MissingExtraError("pyarrow", "ray") from e
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise InputError(f"cannot read {self.name}: {getattr(e, 'strerror', None) or e}") from e

    def rows(self) -> Iterator[dict[str, Any]]:
        """A Parquet file's rows, as Python objects."""
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError as e:
            raise MissingExtraError("pyarrow", "ray") from e
        try:
            handle = self.fs.open_input_file(self.path) if self.fs is not None else self.name
            for batch in pq.ParquetFile(handle).iter_batches():
                yield from batch.to_pylist()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(
                f"cannot read {self.name} as Parquet: {e}. Check that the file is complete"
                " (a copy cut short has no footer), or give JSONL"
            ) from e


def _wanted(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and base.endswith(DATA_SUFFIXES)


def list_sources(path: str) -> list[Source]:
    """The files ``path`` names, in the order they are read."""
    if path == "-":
        return [Source("-")]
    if not is_uri(path):
        local = Path(path)
        if local.is_dir():
            found = sorted(p for p in local.rglob("*") if p.is_file() and _wanted(p.as_posix()))
            if not found:
                raise InputError(
                    f"{path} is a folder with no data files (.jsonl, .jsonl.gz, .parquet...)"
                )
            return [Source(str(p)) for p in found]
        return [Source(path)]
    try:
        import pyarrow.fs as pafs  # type: ignore[import-untyped]
    except ImportError as e:
        raise MissingExtraError("pyarrow", "ray") from e
    scheme = path.partition("://")[0]
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"cannot read {path}: not found")
        if info.type == pafs.FileType.File:
            return [Source(path, fs, inner)]
        listing = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except (OSError, ValueError) as e:  # pyarrow raises OSError for network and auth errors
        raise InputError(f"cannot read {path}: {e}") from e
    files = sorted(i.path for i in listing if i.type == pafs.FileType.File and _wanted(i.path))
    if not files:
        raise InputError(f"{path} is a folder with no data files (.jsonl, .jsonl.gz, .parquet...)")
    return [Source(f"{scheme}://{f}", fs, f) for f in files]


def records(path: str) -> Iterator[tuple[str, int, bytes | dict[str, Any]]]:
    """``(file, number, record)`` for every JSONL line (bytes, split at ``\\n`` only, a
    byte order mark removed) or Parquet row (a dict), in order."""
    for source in list_sources(path):
        if source.parquet:
            for number, row in enumerate(source.rows(), start=1):
                yield source.name, number, row
            continue
        data = source.read_bytes()
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]  # a UTF-8 byte order mark
        for number, line in enumerate(data.split(b"\n"), start=1):
            yield source.name, number, line
