"""What each line of a results log holds, read once and kept next to the log: a session over a long log reads
the index and the lines it needs instead of parsing every line again.

Per line: where it is, its fingerprint (for --ohlora-resume), its run's id and comparable settings, and its
merge head (for the session's report). The index is stored beside the log (`.results.jsonl.index`) once the
log is long enough to be worth it, and trusted only for the bytes whose sha256 it records: a log that was
edited, cut or replaced is indexed anew, one that grew is indexed from where the stored index ends. The
stored index carries a hash of its own body and of the code that computed it, so an edited index or a changed
meaning of "comparable" is rebuilt too. Storing it is best effort: a folder one cannot write to only costs
the next session the full read.
"""

from __future__ import annotations

import array
import base64
import contextlib
import functools
import gc
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, NamedTuple

from ohlora_fixtures.records import record as record_module
from ohlora_fixtures.records.record import (
    BenchmarkRecord,
    MergeHead,
    RecordError,
    Status,
    comparable_json,
    merge_head,
    parse_json,
)
from ohlora_fixtures.records.results import skipped
from ohlora_fixtures.records.storage import NotRegularFile, open_regular, replace_atomically

# Below this size a log is read whole each time (a few milliseconds): no index file beside it.
STORE_FROM_BYTES = 1 << 20
_CHUNK = 1 << 20


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    # What an entry means is computed by this module and the record's (comparable_json, merge_head).
    digest = hashlib.sha256()
    for source in (str(record_module.__file__), __file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


class IndexMismatch(Exception):
    """A line of the log is not what the stored index says of it; the index has been read anew from the log."""


class Entry(NamedTuple):
    """One non-blank line of the log. `settings` is None where the line is not a record whose run's
    comparable settings are valid (not JSON, not an object, a broken run): such a line is read and built
    by whoever needs it, to be warned of. A tuple, for the speed of making 100,000 of them."""

    offset: int
    number: int
    fingerprint: str | None
    run_id: str | None
    settings: str | None
    head: MergeHead | None


class _Table:
    """Strings kept once: a long log repeats its settings, runs and candidates on thousands of lines."""

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str] = values or []
        self._ids: dict[str, int] | None = None  # made when first asked: a session that only reads needs none

    @property
    def ids(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = {value: position for position, value in enumerate(self.values)}
        return self._ids

    def id(self, value: str | None) -> int:
        if value is None:
            return _NONE
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.values)
            self.values.append(value)
        return found

    def at(self, position: int) -> str | None:
        return None if position == _NONE else self.values[position]


_NONE = -1
_TABLES = ("fingerprints", "runs", "settings", "candidates", "kinds", "statuses")
# One machine integer per line and column (the log's 100,000 lines in 9 MB, not 100 MB of Python objects);
# a head's candidate is _NONE where the line has no head.
_COLUMNS = ("offset", "number", "fingerprint", "run", "settings", "candidate", "kind", "rank", "status", "head_run")


class LogIndex:
    """The entries of a results log's lines, in order (`lines`); `refresh` brings them up to the log's end."""

    def __init__(self, path: Path, warned: set[str] | None = None) -> None:
        self.path, self.warned = path, warned
        self._reset()
        with _collector_paused():
            self._load()
            self.refresh()

    def __len__(self) -> int:
        """The whole non-blank lines indexed: every line's entry but a last one without its newline."""
        return len(self._finished)

    @property
    def stored_at(self) -> Path:
        """Where the index of this log is kept."""
        return self.path.with_name(f".{self.path.name}.index")

    def refresh(self) -> None:
        """Check the indexed bytes are still the log's first bytes (else index it all anew), index the whole
        lines written since and store the index if it grew."""
        if not self.path.is_file():
            self._reset()
            return
        grew, running = False, hashlib.sha256()
        with _collector_paused(), self.path.open("rb") as stream:
            if not self._prefix_holds(stream, running):
                self._reset()
                stream.seek(0)
                running = hashlib.sha256()
            for raw in stream:
                if not raw.endswith(b"\n"):
                    break  # a line still being written, or cut by a kill: read as the tail, never stored
                self._lines += 1
                if raw.strip():
                    self._append(_entry(raw, self._size, self._lines))
                self._size += len(raw)
                running.update(raw)
                grew = True
        self._digest = running.hexdigest()
        if grew:
            self._by_fingerprint = None
            if self._size >= STORE_FROM_BYTES:
                self._store()

    def lines(self) -> Iterator[Entry]:
        """Every entry, then the log's last line where it has no newline yet (a cut line, which its reader
        skips silently, or a record some other writer left without one), read now and never stored."""
        for row in range(len(self)):
            yield self._entry_at(row)
        if not self.path.is_file():
            return
        with self.path.open("rb") as stream:
            stream.seek(self._size)
            tail = stream.readline()
        if tail.strip():
            yield _entry(tail, self._size, self._lines + 1)

    def text(self, entry: Entry) -> str:
        """The line itself, read from the log; IndexMismatch, with the index read anew from the log, where the
        line's own fields are not what the entry says (an index file edited or swapped: never trusted then)."""
        with self.path.open("rb") as stream:
            stream.seek(entry.offset)
            raw = stream.readline()
        if _entry(raw, entry.offset, entry.number) != entry:
            warnings.warn(
                f"{self.stored_at}: does not match line {entry.number} of {self.path}; the index is not "
                "trusted, the log is read whole again",
                stacklevel=2,
            )
            self._reset()
            with _collector_paused():
                self.refresh()
            raise IndexMismatch(f"{self.stored_at}: does not match the log")
        return raw.decode("utf-8", errors="replace")

    def record(self, entry: Entry) -> BenchmarkRecord | None:
        """The line's record, or None with an UnreadableRecord warning (as `results.read` gives) where it is
        not a valid one."""
        line = self.text(entry)
        try:
            return BenchmarkRecord.from_json(line)
        except RecordError as error:
            skipped(self.path, entry.number, line, error, self.warned)
            return None

    def newest_first(self, fingerprint: str, *, again: bool = True) -> Iterator[BenchmarkRecord]:
        """The successful records with this fingerprint, newest first, each read only when asked for: a resume
        wants the newest of the same weights, usually the first, not the thousands an old log may hold.
        Unreadable ones are warned of, as by `results.read`; where a line is not what the stored index says,
        the index is read anew from the log and the records taken from it (`again`: once)."""
        if self._by_fingerprint is None:
            self._by_fingerprint = {}
            for row, key in enumerate(self._columns["fingerprint"]):
                if key != _NONE:
                    self._by_fingerprint.setdefault(key, []).append(row)
        try:
            key = self._tables["fingerprints"].values.index(fingerprint)
        except ValueError:
            return
        for row in reversed(self._by_fingerprint.get(key, [])):
            try:
                record = self.record(self._entry_at(row))
            except IndexMismatch:  # read anew from the log: start again from its newest record
                if again:
                    yield from self.newest_first(fingerprint, again=False)
                return
            if record is not None and record.fingerprint == fingerprint and record.ok:
                yield record

    def _append(self, entry: Entry) -> None:
        tables, head = self._tables, entry.head
        values = (
            entry.offset,
            entry.number,
            tables["fingerprints"].id(entry.fingerprint),
            tables["runs"].id(entry.run_id),
            tables["settings"].id(entry.settings),
            tables["candidates"].id(head.key[0]) if head else _NONE,
            tables["kinds"].id(head.key[1]) if head else _NONE,
            head.key[2] if head and head.key[2] is not None else _NONE,
            tables["statuses"].id(head.status.value) if head else _NONE,
            tables["runs"].id(head.run_id) if head else _NONE,
        )
        for name, value in zip(_COLUMNS, values):
            self._columns[name].append(value)
        self._finished.append(math.nan if head is None or head.finished is None else head.finished)

    def _entry_at(self, row: int) -> Entry:
        column, tables = self._columns, self._tables
        head = None
        if column["candidate"][row] != _NONE:
            rank, finished = column["rank"][row], self._finished[row]
            head = MergeHead(
                (tables["candidates"].values[column["candidate"][row]], tables["kinds"].values[column["kind"][row]],
                 None if rank == _NONE else rank),
                None if math.isnan(finished) else finished,
                Status(tables["statuses"].values[column["status"][row]]),
                tables["runs"].values[column["head_run"][row]],
            )
        return Entry(
            column["offset"][row],
            column["number"][row],
            tables["fingerprints"].at(column["fingerprint"][row]),
            tables["runs"].at(column["run"][row]),
            tables["settings"].at(column["settings"][row]),
            head,
        )

    def _reset(self) -> None:
        self._size = 0  # the bytes indexed: whole lines only
        self._lines = 0  # the lines among them, blank ones included
        self._digest = hashlib.sha256().hexdigest()  # of the bytes indexed
        self._tables = {name: _Table() for name in _TABLES}
        self._columns = {name: array.array("q") for name in _COLUMNS}
        self._finished = array.array("d")
        self._by_fingerprint: dict[int, list[int]] | None = None

    def _prefix_holds(self, stream: IO[bytes], running: Any) -> bool:
        """Whether the log still begins with the bytes indexed, hashed into `running`; leaves the stream
        just after them."""
        left = self._size
        while left > 0:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk:
                return False  # the log is shorter than what was indexed
            running.update(chunk)
            left -= len(chunk)
        return running.hexdigest() == self._digest

    def _store(self) -> None:
        body = json.dumps(
            {
                "size": self._size,
                "lines": self._lines,
                "sha256": self._digest,
                "byteorder": sys.byteorder,
                "tables": {name: table.values for name, table in self._tables.items()},
                "columns": {name: _encoded(values) for name, values in self._columns.items()},
                "finished": _encoded(self._finished),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        header = json.dumps({"body": hashlib.sha256(body.encode("utf-8")).hexdigest(), "code": _code_digest()})
        try:
            replace_atomically(self.stored_at, lambda stream: stream.write(f"{header}\n{body}\n"))
        except OSError:
            pass  # a cache: a read-only folder or a full disk costs the next session a full read, nothing more

    def _load(self) -> None:
        """The stored index, where it is whole, of this code and this machine's byte order; nothing (a full
        read) otherwise."""
        try:
            with open_regular(self.stored_at) as stream:  # a FIFO would hang the session, /dev/zero fill memory
                header, body = stream.readline(), stream.readline().rstrip(b"\n")
            if json.loads(header) != {"body": hashlib.sha256(body).hexdigest(), "code": _code_digest()}:
                return
            stored = json.loads(body)
            if stored["byteorder"] != sys.byteorder:
                return
            columns = {name: _decoded("q", stored["columns"][name]) for name in _COLUMNS}
            finished = _decoded("d", stored["finished"])
            if {len(values) for values in columns.values()} != {len(finished)}:
                return
            tables = {name: _Table(list(stored["tables"][name])) for name in _TABLES}
        except NotRegularFile as error:
            warnings.warn(f"{error}; the log index is ignored, the log read whole, and a new index stored "
                          "in its place", stacklevel=2)
            return
        except (OSError, ValueError, TypeError, KeyError):
            return
        self._tables, self._columns, self._finished = tables, columns, finished
        self._size, self._lines, self._digest = int(stored["size"]), int(stored["lines"]), str(stored["sha256"])


def _encoded(values: array.array) -> str:
    return base64.b64encode(values.tobytes()).decode("ascii")


def _decoded(typecode: str, text: str) -> array.array:
    values = array.array(typecode)
    values.frombytes(base64.b64decode(text, validate=True))
    return values


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: an index makes hundreds of thousands of small objects and no
    cycles, and the collector's passes over them doubled the time it takes to read one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _entry(raw: bytes, offset: int, number: int) -> Entry:
    """What the index keeps of one non-blank line."""
    try:
        data = parse_json(raw.decode("utf-8", errors="replace"))
    except RecordError:
        return Entry(offset, number, None, None, None, None)
    if not isinstance(data, Mapping):
        return Entry(offset, number, None, None, None, None)
    fingerprint, run = data.get("fingerprint"), data.get("run")
    run_id = run.get("run_id") if isinstance(run, Mapping) else None
    return Entry(
        offset,
        number,
        fingerprint if isinstance(fingerprint, str) else None,
        run_id if isinstance(run_id, str) else None,
        comparable_json(run),
        merge_head(data),
    )
