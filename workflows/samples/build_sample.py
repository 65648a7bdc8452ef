"""Rebuild the sample corpus in ``workflows/samples/pretrain/`` from CPython's own files (PSF License 2.0).

Real English prose (the reference manual's topics and the standard library's module docstrings) and real
code (standard-library modules), in three input formats, plus a file of deliberately broken records so the
demo shows the quarantine. Run with the Python whose library you want to sample: ``python build_sample.py``.
"""

from __future__ import annotations

import ast
import gzip
import json
import sysconfig
from pathlib import Path
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).parent / "pretrain"
CODE_BUDGET = 3_000_000  # bytes of source code in the sample


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"topic:{k}", "text": v, "title": k} for k, v in sorted(topics.items())]
    pq.write_table(pa.Table.from_pylist(rows), HERE / "python-reference-topics.parquet", compression="zstd")

    docstrings = []
    code = []
    used = 0
    for path in stdlib_files():
        source = path.read_text(encoding="utf-8", errors="replace")
        doc = ast.get_docstring(ast.parse(source)) or ""
        if len(doc) > 200:
            docstrings.append({"id": f"doc:{path.stem}", "text": doc})
        if used + len(source) <= CODE_BUDGET:
            code.append({"id": f"code:{path.name}", "text": source, "lang": "python"})
            used += len(source)
    with gzip.open(HERE / "python-module-docs.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in docstrings)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in code).encode()
    (HERE / "python-stdlib-code.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(payload))
    bad = [
        b'{"id": "ok-1", "text": "A well-formed record among broken ones."}',
        b'{"id": "bad-json", "text": "unterminated',
        b'{"id": "bad-utf8", "text": "caf\xe9"}',
        b'{"id": "no-text", "body": "the text field is missing"}',
        b'{"id": "number-text", "text": 42}',
        b'{"id": "empty-text", "text": "   "}',
        b"",
    ]
    (HERE / "planted-bad-records.jsonl").write_bytes(b"\n".join(bad) + b"\n")


if __name__ == "__main__":
    main()
