"""Document-layout shards: one training document per kept input document, its ids framed by BOS/EOS, no padding.

This is what a trainer that samples its own windows reads: Megatron-LM's ``GPTDataset`` concatenates the
documents of an indexed dataset and draws ``seq_length + 1`` windows from them, and datatrove/nanotron's
``DatatroveFolderDataset`` does the same over ``.ds`` files. Packing for them would put padding inside their
windows. Two formats:

- ``megatron``: ``PREFIX.bin`` (int32 ids) + ``PREFIX.idx``, each document one sequence, byte for byte what
  megatron-core's ``IndexedDatasetBuilder.add_document`` writes (``tools/preprocess_data.py --append-eod``);
  SFT adds ``PREFIX.loss_mask.bin/.idx`` (int8) with the same documents.
- ``datatrove``: ``PREFIX.ds`` (uint32 ids), ``PREFIX.ds.index`` (uint64 end of each document),
  ``PREFIX.ds.loss`` (one byte per token, SFT) and ``PREFIX.ds.metadata``, as datatrove's ``DocumentTokenizer``
  writes them.

A split writes one shard per format (per mix bucket when the mix is left to the trainer's blend), streamed batch by
batch through ``AtomicWriter``: a killed task leaves no file under a final name.
"""

from __future__ import annotations

import numpy as np

from schemas.manifest import DocumentShardEntry
from schemas.stages import bucket_dir
from storage.fs import AtomicWriter, file_digest, join, write_bytes_atomic
from storage.megatron import encode_index


class _MegatronDocuments:
    def __init__(self, url: str, with_mask: bool) -> None:
        self.url = url
        self.tokens = AtomicWriter(url + ".bin").__enter__()
        self.mask = AtomicWriter(url + ".loss_mask.bin").__enter__() if with_mask else None
        self.lengths: list[np.ndarray] = []

    def write(self, stream: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None) -> None:
        self.tokens.write(stream.astype(np.int32, copy=False).data)
        if self.mask is not None:
            self.mask.write(mask.astype(np.int8, copy=False).data)
        self.lengths.append(lengths)

    def close(self) -> dict[str, str]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        files = {}
        for suffix, out, dtype in ((".", self.tokens, np.int32), (".loss_mask.", self.mask, np.int8)):
            if out is None:
                continue
            out.__exit__(None, None, None)
            index = encode_index(np.dtype(dtype), lengths)
            write_bytes_atomic(f"{self.url}{suffix}idx", index)
            files[f"{suffix}bin"], files[f"{suffix}idx"] = out.digest.hexdigest(), file_digest(index)
        return files


class _DatatroveDocuments:
    def __init__(self, url: str, with_mask: bool, tokenizer: str) -> None:
        self.url, self.tokenizer = url, tokenizer
        self.tokens = AtomicWriter(url + ".ds").__enter__()
        self.mask = AtomicWriter(url + ".ds.loss").__enter__() if with_mask else None
        self.ends: list[np.ndarray] = []
        self.written = 0

    def write(self, stream: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None) -> None:
        self.tokens.write(stream.astype("<u4", copy=False).data)
        if self.mask is not None:
            self.mask.write((mask != 0).astype(np.uint8).data)
        self.ends.append(self.written + np.cumsum(lengths, dtype=np.uint64))
        self.written += int(lengths.sum())

    def close(self) -> dict[str, str]:
        files = {".ds": self._finish(self.tokens)}
        if self.mask is not None:
            files[".ds.loss"] = self._finish(self.mask)
        ends = np.concatenate(self.ends).astype("<u8") if self.ends else np.zeros(0, "<u8")
        for suffix, data in ((".ds.index", ends.tobytes()), (".ds.metadata", self._metadata())):
            write_bytes_atomic(self.url + suffix, data)
            files[suffix] = file_digest(data)
        return files

    def _metadata(self) -> bytes:
        """datatrove's ``write_final_metadata``: ``tokenizer|token size``, the token count, the count in words."""
        return f"{self.tokenizer}|4\n{self.written}\n{_metric(self.written)}T".encode()

    @staticmethod
    def _finish(out: AtomicWriter) -> str:
        out.__exit__(None, None, None)
        return out.digest.hexdigest()


def _metric(n: int) -> str:
    for scale, unit in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} "


class _Shard:
    """One (bucket, split) shard in every document format."""

    def __init__(self, out: str, relative: str, formats: list[str], with_mask: bool, tokenizer: str) -> None:
        self.relative = relative
        self.writers = {}
        if "megatron" in formats:
            self.writers["megatron"] = _MegatronDocuments(join(out, "megatron", relative), with_mask)
        if "datatrove" in formats:
            self.writers["datatrove"] = _DatatroveDocuments(join(out, "datatrove", relative), with_mask, tokenizer)
        self.documents = self.tokens = 0
        self.with_mask = with_mask

    def write(self, stream: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None) -> None:
        if mask is None and self.with_mask:  # the mask files stay aligned with the tokens
            mask = np.zeros(len(stream), np.int8)
        elif mask is not None and not self.with_mask:
            raise ValueError(f"{self.relative}: a loss mask arrived for a shard that began without one")
        for writer in self.writers.values():
            writer.write(stream, lengths, mask)
        self.documents += len(lengths)
        self.tokens += int(lengths.sum())


class DocumentShards:
    """The document-layout shards of one split: ``OUT/<format>/[<bucket>/]<split>``."""

    def __init__(self, out: str, name: str, partition: int, formats: list[str], tokenizer: str) -> None:
        self.out, self.name, self.partition = out, name, partition
        self.formats = [f for f in formats if f in ("megatron", "datatrove")]
        self.tokenizer = tokenizer
        self.shards: dict[str | None, _Shard] = {}

    def add(self, bucket: str | None, stream: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None) -> None:
        """Append documents (their framed ids as one flat ``stream``, and ``lengths``) to ``bucket``'s shard
        (None: the one shard of an unbucketed output)."""
        if not self.formats or not len(lengths):
            return
        if bucket not in self.shards:
            relative = self.name if bucket is None else f"{bucket_dir(bucket)}/{self.name}"
            self.shards[bucket] = _Shard(self.out, relative, self.formats, mask is not None, self.tokenizer)
        self.shards[bucket].write(stream, lengths, mask)

    def close(self) -> list[DocumentShardEntry]:
        entries = []
        for bucket, shard in sorted(self.shards.items(), key=lambda item: item[0] or ""):
            for fmt, writer in shard.writers.items():
                prefix = f"{fmt}/{shard.relative}"
                files = {prefix + suffix: digest for suffix, digest in writer.close().items()}
                entry = DocumentShardEntry(
                    format=fmt,
                    prefix=prefix,
                    bucket=bucket,
                    partition=self.partition,
                    documents=shard.documents,
                    tokens=shard.tokens,
                    files=dict(sorted(files.items())),
                )
                entries.append(entry)
        return entries
