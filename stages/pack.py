"""Pack tokenized documents into fixed-length sequences that record their document boundaries.

Both modes cut documents into *pieces* (a run of one document's tokens inside one sequence) and then lay the
pieces out with one vectorised gather; only best-fit's bin choice loops in Python, once per document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sortedcontainers import SortedList

from schemas.document import SEQUENCE_SCHEMA, TOKEN_IDS
from schemas.stages import PackConfig

LOSS_MASK = "loss_mask"


@dataclass(frozen=True)
class Pieces:
    """Where each piece comes from (``src`` into the flat token stream) and goes (``seq``, ``offset``)."""

    src: np.ndarray
    length: np.ndarray
    doc: np.ndarray
    seq: np.ndarray
    offset: np.ndarray
    n_seq: int


def document_stream(table: pa.Table, config: PackConfig) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens of every document with BOS/EOS added, and the start offset of each document (+ end).

    ``np.insert`` adds the markers chunk by chunk in one pass each; no per-token index arrays.
    """
    pieces: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    extra = int(config.add_bos) + int(config.add_eos)
    for chunk in table.column(TOKEN_IDS).chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        offsets = offsets - offsets[0]
        # Interleaved [start_0, end_0, start_1, end_1, …]: np.insert keeps equal positions in this order,
        # so EOS of one document comes before BOS of the next.
        where = np.stack([offsets[:-1], offsets[1:]], axis=1)
        marks = np.array([config.bos_id, config.eos_id], np.int32)
        keep = np.array([config.add_bos, config.add_eos])
        positions = where[:, keep].ravel()
        markers = np.broadcast_to(marks[keep], where[:, keep].shape).ravel()
        pieces.append(np.insert(values.astype(np.int32, copy=False), positions, markers))
        lengths.append(np.diff(offsets) + extra)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    return stream, np.concatenate([[0], np.cumsum(all_lengths)]).astype(np.int64)


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """[0..l0), [0..l1), … concatenated."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def _scatter(dest: np.ndarray, dest_starts: np.ndarray, src_starts: np.ndarray, lengths: np.ndarray, src) -> None:
    """Copy runs ``src[s:s+n]`` to ``dest[d:d+n]``. Runs are long (a document or a piece of one), so one slice
    copy per run beats per-token index arrays, which move 24 bytes of indices for every 4-byte token."""
    if len(lengths) and lengths.sum() < 64 * len(lengths):  # many tiny runs: vectorised gather
        within = _ragged_arange(lengths)
        dest[np.repeat(dest_starts, lengths) + within] = src[np.repeat(src_starts, lengths) + within]
        return
    for d, s, n in zip(dest_starts.tolist(), src_starts.tolist(), lengths.tolist(), strict=True):
        dest[d : d + n] = src[s : s + n]


def pieces_concat(doc_offsets: np.ndarray, seq_len: int) -> Pieces:
    """One stream cut every ``seq_len`` tokens: a piece ends at a document end or a sequence end."""
    total = int(doc_offsets[-1])
    cuts = np.union1d(doc_offsets, np.arange(0, total, seq_len, dtype=np.int64))
    starts, ends = cuts[:-1], cuts[1:]
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    doc = np.searchsorted(doc_offsets, starts, side="right") - 1
    return Pieces(starts, ends - starts, doc, starts // seq_len, starts % seq_len, -(-total // seq_len))


def pieces_best_fit(doc_offsets: np.ndarray, seq_len: int) -> Pieces:
    """Best-fit decreasing (Ding et al. 2024): full ``seq_len`` chunks of long documents fill their own
    sequences; each remainder goes to the fullest open sequence it fits in, largest remainders first."""
    lengths = np.diff(doc_offsets)
    n_full = lengths // seq_len
    rest = lengths - n_full * seq_len
    full_doc = np.repeat(np.arange(len(lengths)), n_full)
    full_src = doc_offsets[full_doc] + _ragged_arange(n_full) * seq_len
    n_fixed = len(full_doc)

    order = np.argsort(-rest, kind="stable")
    order = order[rest[order] > 0]
    free = SortedList()  # (remaining capacity, bin number)
    bin_of = np.empty(len(order), np.int64)
    fill_of = np.empty(len(order), np.int64)
    used: list[int] = []
    for i, doc in enumerate(order.tolist()):
        need = int(rest[doc])
        at = free.bisect_left((need, -1))
        if at == len(free):
            number = len(used)
            used.append(0)
        else:
            _, number = free.pop(at)
        fill_of[i] = used[number]
        used[number] += need
        bin_of[i] = number
        if used[number] < seq_len:
            free.add((seq_len - used[number], number))
    rest_src = doc_offsets[order] + n_full[order] * seq_len
    return Pieces(
        src=np.concatenate([full_src, rest_src]).astype(np.int64),
        length=np.concatenate([np.full(n_fixed, seq_len), rest[order]]).astype(np.int64),
        doc=np.concatenate([full_doc, order]).astype(np.int64),
        seq=np.concatenate([np.arange(n_fixed), n_fixed + bin_of]).astype(np.int64),
        offset=np.concatenate([np.zeros(n_fixed, np.int64), fill_of]),
        n_seq=n_fixed + len(used),
    )


def pack(table: pa.Table, config: PackConfig) -> pa.Table:
    """Packed sequences (SEQUENCE_SCHEMA) from a tokenized document batch, in a deterministic order."""
    if "mix_copies" in table.column_names:  # the mix stage's up-sampling: lay each document out that often
        copies = table.column("mix_copies").to_numpy()
        table = table.take(pa.array(np.repeat(np.arange(table.num_rows), copies)))
    if table.num_rows == 0:
        return SEQUENCE_SCHEMA.empty_table()
    stream, doc_offsets = document_stream(table, config)
    finder = pieces_concat if config.mode == "concat" else pieces_best_fit
    pieces = finder(doc_offsets, config.seq_len)
    packed = assemble(stream, pieces, table.column("id").combine_chunks(), config)
    if LOSS_MASK not in table.column_names:
        return packed
    # The loss mask travels exactly as the tokens do: BOS and padding 0, EOS 1 (the model learns to stop).
    masks = table.select([LOSS_MASK]).rename_columns([TOKEN_IDS])
    mask_config = config.model_copy(update={"bos_id": 0, "eos_id": 1, "pad_id": 0})
    mask_stream, _ = document_stream(masks, mask_config)
    mask = assemble(mask_stream, pieces, table.column("id").combine_chunks(), mask_config).column("input_ids")
    values = pc.cast(mask.combine_chunks().values, pa.int8())
    offsets = mask.combine_chunks().offsets
    return packed.append_column(LOSS_MASK, pa.ListArray.from_arrays(offsets, values))


def assemble(stream: np.ndarray, pieces: Pieces, doc_ids: pa.Array, config: PackConfig) -> pa.Table:
    seq_len = config.seq_len
    tokens = np.full(pieces.n_seq * seq_len, config.pad_id, np.int32)
    _scatter(tokens, pieces.seq * seq_len + pieces.offset, pieces.src, pieces.length, stream)
    # Pieces sorted by (sequence, offset) give each sequence's boundaries in order.
    order = np.lexsort((pieces.offset, pieces.seq))
    seq, doc = pieces.seq[order], pieces.doc[order]
    piece_ends = (pieces.offset + pieces.length)[order]
    per_seq = np.bincount(seq, minlength=pieces.n_seq)
    filled = np.bincount(seq, weights=pieces.length[order], minlength=pieces.n_seq).astype(np.int64)
    piece_offsets = np.concatenate([[0], np.cumsum(per_seq)])
    # cu_seqlens of a sequence: 0, then the end of each of its pieces (pieces are contiguous from 0).
    cu_offsets = piece_offsets + np.arange(pieces.n_seq + 1)
    starts = np.zeros(len(piece_ends) + pieces.n_seq, bool)
    starts[cu_offsets[:-1]] = True
    cu_values = np.zeros(len(starts), np.int32)
    cu_values[~starts] = piece_ends
    seq_offsets = np.arange(pieces.n_seq + 1, dtype=np.int32) * seq_len
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(seq_offsets), pa.array(tokens)),
            "cu_seqlens": pa.ListArray.from_arrays(pa.array(cu_offsets.astype(np.int32)), pa.array(cu_values)),
            "doc_ids": pa.ListArray.from_arrays(pa.array(piece_offsets.astype(np.int32)), doc_ids.take(doc)),
            "n_pad": pa.array((seq_len - filled).astype(np.int32)),
        },
        schema=SEQUENCE_SCHEMA,
    )
