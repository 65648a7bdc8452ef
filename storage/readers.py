"""Input readers: raw files in, a document table and a quarantine table out.

Every input record is accounted for: it becomes a document (DOCUMENT_SCHEMA) or a quarantine row with the
source, the line and the reason. ``RawBatch.n_input`` counts both, so the funnel can balance.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.document import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA
from schemas.spec import InputSpec
from storage.decompress import strip_compression
from storage.fs import display_name

RAW_PREVIEW = 512
FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".txt": "text",
    ".md": "text",
}


class UnknownFormatError(ValueError):
    pass


def detect_format(url: str, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = posixpath.splitext(strip_compression(url).lower())[1]
    if suffix not in FORMAT_BY_SUFFIX:
        raise UnknownFormatError(
            f"cannot tell the format of {url!r} from its extension; set input.format to one of "
            "jsonl, parquet, csv, text"
        )
    return FORMAT_BY_SUFFIX[suffix]


def generated_id(source: str, line: int) -> str:
    return f"{hashlib.sha1(source.encode()).hexdigest()[:12]}:{line}"


@dataclass
class RawBatch:
    """Documents and quarantined records read from one partition's files."""

    documents: pa.Table
    quarantine: pa.Table
    n_input: int
    #: Stored (on-disk) bytes of the input this batch accounts for: summed over a split's batches, its size.
    consumed: int = 0


def _as_string(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@dataclass
class _Collector:
    source: str
    extra_fields: tuple[str, ...] = ()
    extras: dict[str, list[str | None]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad: list[dict[str, object]] = field(default_factory=list)
    n_input: int = 0

    def keep(self, doc_id: str, text: str, line: int, record: dict | None = None) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.lines.append(line)
        for name in self.extra_fields:
            self.extras.setdefault(name, []).append(_as_string(record.get(name)) if record else None)

    def quarantine(
        self, line: int, reason: str, detail: str, fld: str | None = None, raw: bytes | memoryview = b""
    ) -> None:
        preview = bytes(raw[:RAW_PREVIEW]).decode("utf-8", errors="replace") if len(raw) else None
        self.bad.append(
            {
                "source": self.source,
                "line": line,
                "field": fld,
                "reason": reason,
                "detail": f"{self.source}:{line}: {detail}",
                "raw": preview,
            }
        )

    def batch(self) -> RawBatch:
        docs = pa.table(
            {
                "id": pa.array(self.ids, pa.string()),
                "text": pa.array(self.texts, pa.string()),
                "source": pa.array([self.source] * len(self.ids), pa.string()),
                "line": pa.array(self.lines, pa.int64()),
            },
            schema=DOCUMENT_SCHEMA,
        )
        for name in self.extra_fields:
            docs = docs.append_column(name, pa.array(self.extras.get(name, []), pa.string()))
        quarantine = pa.Table.from_pylist(self.bad, schema=QUARANTINE_SCHEMA)
        return RawBatch(docs, quarantine, self.n_input)


def _check_text(col: _Collector, text: object, line: int, cfg: InputSpec, raw: bytes | memoryview) -> str | None:
    """The text if it is usable, else None after quarantining the record with the reason."""
    if text is None:
        col.quarantine(line, "missing_field", f"field {cfg.text_field!r} is missing", cfg.text_field, raw)
    elif not isinstance(text, str):
        kind = {"int": "an integer", "float": "a number", "bool": "a boolean", "list": "a list", "dict": "an object"}
        what = kind.get(type(text).__name__, type(text).__name__)
        col.quarantine(line, "non_string_field", f"field {cfg.text_field!r} is {what}", cfg.text_field, raw)
    elif not text or text.isspace():  # isspace copies nothing; strip() copied every text
        col.quarantine(line, "empty_text", f"field {cfg.text_field!r} is empty", cfg.text_field, raw)
    else:
        return text
    return None


#: The bytes ``bytes.isspace`` counts as white space: a line that starts with none of them is not blank.
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
#: Records per batch at most: a few MB of blank or broken lines are millions of quarantine rows, each a Python
#: object until the batch is built, so a batch is bounded by its count of lines as well as by its bytes.
MAX_BATCH_RECORDS = 1 << 16


def iter_jsonl(
    source: str, data: bytes | bytearray, problem: str | None, cfg: InputSpec, first_line: int = 1,
    reason: str = "truncated_file",
) -> Iterator[RawBatch]:  # fmt: skip
    """The records of ``data`` (JSONL) in batches of at most ``MAX_BATCH_RECORDS``. Each line is parsed from a view
    into ``data``: a 16 MB batch is neither split into thousands of ``bytes`` copies nor counted first. With a
    ``problem``, the bytes after the last newline belong to the record the truncation cut: they go to quarantine
    with the file's problem, last."""
    view, find = memoryview(data), data.find
    end = len(data) if problem is None else data.rfind(b"\n") + 1
    col, number, start = _Collector(source, tuple(cfg.keep_fields)), first_line, 0
    while start < end or problem is not None:
        if col.n_input == MAX_BATCH_RECORDS:
            yield col.batch()
            col = _Collector(source, tuple(cfg.keep_fields))
        if start >= end:  # the cut record
            col.n_input += 1
            col.quarantine(number, reason, problem, raw=view[end:])
            break
        newline = find(b"\n", start, end)
        stop = end if newline < 0 else newline
        _read_record(col, view[start:stop], number, cfg)
        number, start = number + 1, stop + 1
    yield col.batch()


def read_jsonl(
    source: str, data: bytes | bytearray, problem: str | None, cfg: InputSpec, first_line: int = 1,
    reason: str = "truncated_file",
) -> RawBatch:  # fmt: skip
    """All the records of ``data`` as one batch (``iter_jsonl`` bounds a batch's record count)."""
    return concat_batches(iter_jsonl(source, data, problem, cfg, first_line, reason))


def _read_record(col: _Collector, line: memoryview, number: int, cfg: InputSpec) -> None:
    """One JSONL line: kept as a document or quarantined with the reason."""
    col.n_input += 1
    if len(line) > cfg.max_doc_bytes:  # long lines are cut when read, so their full length is not known here
        col.quarantine(number, "too_large", f"record longer than max_doc_bytes ({cfg.max_doc_bytes})", raw=line)
        return
    if not line or (line[0] in _SPACE and bytes(line).isspace()):
        col.quarantine(number, "blank_line", "blank line", raw=line)
        return
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        try:
            bytes(line).decode("utf-8")
        except UnicodeDecodeError as bad:
            col.quarantine(number, "invalid_utf8", f"invalid UTF-8 at byte {bad.start}", raw=line)
        else:
            col.quarantine(number, "malformed_json", f"malformed JSON: {error}", raw=line)
        return
    if not isinstance(record, dict):
        col.quarantine(number, "not_an_object", f"a JSON {type(record).__name__}, not an object", raw=line)
        return
    text = _check_text(col, record.get(cfg.text_field), number, cfg, line)
    if text is not None:
        doc_id = record.get(cfg.id_field)
        doc_id = generated_id(col.source, number) if doc_id is None or doc_id == "" else str(doc_id)
        col.keep(doc_id, text, number, record)


def read_text(
    source: str, data: bytes, problem: str | None, cfg: InputSpec, reason: str = "truncated_file"
) -> RawBatch:
    col = _Collector(source, tuple(cfg.keep_fields))
    col.n_input = 1
    if problem is not None:
        col.quarantine(1, reason, problem, raw=data)
    elif len(data) > cfg.max_doc_bytes:
        col.quarantine(1, "too_large", f"file of {len(data)} bytes > max_doc_bytes", raw=data)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as bad:
            col.quarantine(1, "invalid_utf8", f"invalid UTF-8 at byte {bad.start}", raw=data)
        else:
            if _check_text(col, text, 1, cfg, data) is not None:
                col.keep(generated_id(source, 1), text, 1)
    return col.batch()


def _plain_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded and view strings as plain strings (other types are left for the caller to refuse)."""
    if pa.types.is_dictionary(column.type):
        column = pa.chunked_array([c.dictionary_decode() for c in column.chunks], column.type.value_type)
    if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column


def _table_to_batch(
    source: str, table: pa.Table, cfg: InputSpec, col: _Collector, first_line: int, keep: np.ndarray | None = None
) -> RawBatch:
    """Vectorised checks for columnar inputs (Parquet, CSV): one pass of Arrow compute, no row loop. ``keep``: the
    rows' positions among the block's rows when some were already quarantined (their line numbers)."""
    if "__row" in table.column_names:
        table = table.drop_columns(["__row"])
    n = table.num_rows
    col.n_input += n
    positions = np.arange(n) if keep is None else keep
    lines = pa.array(first_line + positions.astype(np.int64), pa.int64())
    repeated = sorted({name for name in table.column_names if table.column_names.count(name) > 1})
    if repeated:  # which of two "text" columns is the text? Neither: every row is quarantined, with the reason
        for line in lines.to_pylist():
            col.quarantine(line, "duplicate_field", f"column(s) {', '.join(repeated)} appear more than once")
        return col.batch()
    if cfg.text_field not in table.column_names:
        for line in lines.to_pylist():
            col.quarantine(line, "missing_field", f"column {cfg.text_field!r} is missing", cfg.text_field)
        return col.batch()
    text = _plain_strings(table.column(cfg.text_field))
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        kind = str(text.type)
        for line in lines.to_pylist():
            col.quarantine(line, "non_string_field", f"column {cfg.text_field!r} is {kind}", cfg.text_field)
        return col.batch()
    text = text.cast(pa.string())
    stripped_len = pc.utf8_length(pc.utf8_trim_whitespace(text))
    reasons = pc.if_else(
        pc.is_null(text),
        "missing_field",
        pc.if_else(
            pc.equal(stripped_len, 0),
            "empty_text",
            pc.if_else(pc.greater(pc.binary_length(text), cfg.max_doc_bytes), "too_large", None),
        ),
    )
    bad = pc.is_valid(reasons)
    for line, reason in zip(lines.filter(bad).to_pylist(), reasons.filter(bad).to_pylist(), strict=True):
        col.quarantine(line, reason, f"field {cfg.text_field!r}: {reason.replace('_', ' ')}", cfg.text_field)
    good = pc.invert(bad)
    ids = None
    if cfg.id_field in table.column_names:
        ids = _plain_strings(table.column(cfg.id_field))
        try:
            ids = ids.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # lists, structs: JSON text, as JSONL ids are
            ids = pa.array([_as_string(v) for v in ids.to_pylist()], pa.string())
        ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)  # an empty id is no id
    good_lines = lines.filter(good)
    generated = pa.array([generated_id(source, x) for x in good_lines.to_pylist()], pa.string())
    good_ids = pc.coalesce(ids.filter(good), generated) if ids is not None else generated
    docs = pa.table(
        {
            "id": good_ids,
            "text": text.filter(good),
            "source": pa.array([source] * len(good_lines), pa.string()),
            "line": good_lines,
        }
    ).cast(DOCUMENT_SCHEMA)
    for name in cfg.keep_fields:
        if name not in table.column_names:
            docs = docs.append_column(name, pa.nulls(docs.num_rows, pa.string()))
            continue
        values = table.column(name).filter(good)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            docs = docs.append_column(name, values.cast(pa.string()))
        else:
            docs = docs.append_column(name, pa.array([_as_string(v) for v in values.to_pylist()], pa.string()))
    base = col.batch()
    return RawBatch(pa.concat_tables([base.documents, docs], promote_options="default"), base.quarantine, base.n_input)


def unreadable(source: str, detail: str, reason: str = "unreadable_file", line: int = 0, consumed: int = 0) -> RawBatch:
    """One quarantine record standing for a file (or the rest of one) that cannot be read."""
    col = _Collector(display_name(source))
    col.n_input = 1
    col.quarantine(line, reason, detail)
    batch = col.batch()
    batch.consumed = consumed
    return batch


def refused_files(sources: Iterable[str], reasons: Iterable[str]) -> RawBatch:
    """Quarantine records for input files the job will not open (special files, symlinks out of the roots)."""
    return concat_batches(unreadable(s, f"not read: {why}") for s, why in zip(sources, reasons, strict=True))


def concat_batches(batches: Iterable[RawBatch]) -> RawBatch:
    items = list(batches)
    return RawBatch(
        pa.concat_tables([b.documents for b in items]) if items else DOCUMENT_SCHEMA.empty_table(),
        pa.concat_tables([b.quarantine for b in items]) if items else QUARANTINE_SCHEMA.empty_table(),
        sum(b.n_input for b in items),
        sum(b.consumed for b in items),
    )
