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

    Each document's tokens are copied once, as one slice, to their place in a preallocated stream; the markers
    are then set with one fancy assignment each.
    """
    pieces: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    bos, extra = int(config.add_bos), int(config.add_bos) + int(config.add_eos)
    for chunk in table.column(TOKEN_IDS).chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]].astype(np.int32, copy=False)
        offsets = offsets - offsets[0]
        doc_lengths = np.diff(offsets) + extra
        starts = np.cumsum(doc_lengths) - doc_lengths
        out = np.empty(len(values) + extra * len(doc_lengths), np.int32)
        _scatter(out, starts + bos, offsets[:-1], doc_lengths - extra, values)
        if config.add_bos:
            out[starts] = config.bos_id
        if config.add_eos:
            out[starts + doc_lengths - 1] = config.eos_id
        pieces.append(out)
        lengths.append(doc_lengths)
    stream = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
    if not pieces:
        stream = np.zeros(0, np.int32)
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


def _fill(dest: np.ndarray, starts: np.ndarray, lengths: np.ndarray, value: int) -> None:
    """Set runs ``dest[s:s+n]`` to ``value``."""
    if len(lengths) and lengths.sum() < 64 * len(lengths):
        dest[np.repeat(starts, lengths) + _ragged_arange(lengths)] = value
        return
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        dest[s : s + n] = value


def pieces_concat(doc_offsets: np.ndarray, seq_len: int, fill: int = 0) -> Pieces:
    """One stream cut every ``seq_len`` tokens: a piece ends at a document end or a sequence end. ``fill`` tokens
    of sequence 0 are already taken (the open sequence carried from the previous batch)."""
    total = int(doc_offsets[-1])
    virtual = doc_offsets + fill
    cuts = np.union1d(virtual, np.arange(0, fill + total, seq_len, dtype=np.int64))
    cuts = cuts[cuts >= fill]
    starts, ends = cuts[:-1], cuts[1:]
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    doc = np.searchsorted(virtual, starts, side="right") - 1
    return Pieces(starts - fill, ends - starts, doc, starts // seq_len, starts % seq_len, -(-(fill + total) // seq_len))


def pieces_best_fit(doc_offsets: np.ndarray, seq_len: int, fills: list[int] | None = None) -> Pieces:
    """Best-fit decreasing (Ding et al. 2024): full ``seq_len`` chunks of long documents fill their own
    sequences; each remainder goes to the fullest open sequence it fits in, largest remainders first.

    ``fills``: tokens already taken in the sequences carried open from the previous batch; they are sequences
    ``0..len(fills)-1``, then come the full chunks, then the new sequences."""
    carried = list(fills or [])
    m = len(carried)
    lengths = np.diff(doc_offsets)
    n_full = lengths // seq_len
    rest = lengths - n_full * seq_len
    full_doc = np.repeat(np.arange(len(lengths)), n_full)
    full_src = doc_offsets[full_doc] + _ragged_arange(n_full) * seq_len
    n_fixed = len(full_doc)

    order = np.argsort(-rest, kind="stable")
    order = order[rest[order] > 0]
    free = SortedList((seq_len - used, number) for number, used in enumerate(carried) if used < seq_len)
    bin_of = np.empty(len(order), np.int64)
    fill_of = np.empty(len(order), np.int64)
    used = carried
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
        seq=np.concatenate([m + np.arange(n_fixed), np.where(bin_of < m, bin_of, bin_of + n_fixed)]).astype(np.int64),
        offset=np.concatenate([np.zeros(n_fixed, np.int64), fill_of]),
        n_seq=n_fixed + len(used),
    )


def expand_copies(table: pa.Table) -> pa.Table:
    """The mix stage's up-sampling: each document laid out ``mix_copies`` times."""
    if "mix_copies" not in table.column_names:
        return table
    copies = table.column("mix_copies").to_numpy()
    return table.take(pa.array(np.repeat(np.arange(table.num_rows), copies)))


@dataclass
class _Open:
    """Sequences left open by the previous batch: their pieces, with the tokens (and loss mask) they hold."""

    tokens: np.ndarray
    mask: np.ndarray | None
    pieces: Pieces  # src into ``tokens``, doc into ``doc_ids``
    doc_ids: pa.Array
    fills: list[int]


class Packer:
    """Packs batch after batch into closed sequences, carrying open (not yet full) sequences to the next batch,
    so a task's memory is bounded by its batch and ``max_open`` sequences, and short documents still fill their
    sequences as if the whole partition were packed at once."""

    def __init__(self, config: PackConfig) -> None:
        self.config = config
        self.open: _Open | None = None
        self.with_mask = False  # SFT: once a batch has a loss mask, every output carries one

    def add(self, table: pa.Table, final: bool = False) -> pa.Table:
        """The sequences closed after adding ``table`` (all of them when ``final``), in a deterministic order."""
        config = self.config
        if table.num_rows:
            table = expand_copies(table)
            self.with_mask = self.with_mask or LOSS_MASK in table.column_names
            stream, doc_offsets = document_stream(table, config)
            doc_ids = table.column("id").combine_chunks()
        else:  # nothing new (the final call may bring no table of tokens at all)
            stream, doc_offsets, doc_ids = np.zeros(0, np.int32), np.zeros(1, np.int64), pa.array([], pa.string())
        with_mask = self.with_mask
        new_mask = mask_stream(table, config) if with_mask and table.num_rows else None
        carried = self.open
        if carried is None:
            carried = _Open(np.zeros(0, np.int32), None, _no_pieces(), pa.array([], pa.string()), [])
        base = len(carried.tokens)
        if config.mode == "concat":
            new = pieces_concat(doc_offsets, config.seq_len, carried.fills[0] if carried.fills else 0)
        else:
            new = pieces_best_fit(doc_offsets, config.seq_len, list(carried.fills))
        n_carried = len(carried.doc_ids)
        pieces = Pieces(
            src=np.concatenate([carried.pieces.src, new.src + base]),
            length=np.concatenate([carried.pieces.length, new.length]),
            doc=np.concatenate([carried.pieces.doc, new.doc + n_carried]),
            seq=np.concatenate([carried.pieces.seq, new.seq]),
            offset=np.concatenate([carried.pieces.offset, new.offset]),
            n_seq=max(new.n_seq, len(carried.fills)),
        )
        tokens = np.concatenate([carried.tokens, stream])
        ids = pa.concat_arrays([carried.doc_ids, doc_ids.cast(pa.string())])
        mask = None
        if with_mask:
            old_mask = carried.mask if carried.mask is not None else np.zeros(base, np.int8)
            mask = np.concatenate([old_mask, new_mask if new_mask is not None else np.zeros(0, np.int8)])
        fill = np.bincount(pieces.seq, weights=pieces.length, minlength=pieces.n_seq).astype(np.int64)
        closed = np.ones(pieces.n_seq, bool) if final else self._closed(fill)
        self.open = None if final else _keep_open(tokens, mask, pieces, ids, fill, ~closed)
        return _assemble_closed(tokens, mask, pieces, ids, closed, config)

    def _closed(self, fill: np.ndarray) -> np.ndarray:
        seq_len = self.config.seq_len
        closed = fill >= seq_len
        if self.config.mode == "concat":
            closed[: len(fill) - 1] = True  # only the last sequence of a stream can be unfinished
            return closed
        partial = np.flatnonzero(~closed)
        if len(partial) > self.config.max_open:
            # the emptiest stay open (they can still take long remainders); the fullest are closed
            by_room = partial[np.lexsort((partial, fill[partial]))]
            closed[by_room[self.config.max_open :]] = True
        return closed


def _no_pieces() -> Pieces:
    empty = np.zeros(0, np.int64)
    return Pieces(empty, empty, empty, empty, empty, 0)


def _select(pieces: Pieces, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which pieces lie in the chosen sequences, and those sequences renumbered 0..k-1 in order."""
    number = np.full(pieces.n_seq, -1, np.int64)
    number[seqs] = np.arange(len(seqs))
    return number[pieces.seq] >= 0, number


def _keep_open(
    tokens: np.ndarray, mask: np.ndarray | None, pieces: Pieces, ids: pa.Array, fill: np.ndarray, is_open: np.ndarray
) -> _Open | None:
    seqs = np.flatnonzero(is_open)
    if not len(seqs):
        return None
    inside, number = _select(pieces, seqs)
    src, length = pieces.src[inside], pieces.length[inside]
    new_src = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    kept = np.zeros(int(length.sum()), np.int32)
    _scatter(kept, new_src, src, length, tokens)
    kept_mask = None
    if mask is not None:
        kept_mask = np.zeros(len(kept), np.int8)
        _scatter(kept_mask, new_src, src, length, mask)
    n = int(inside.sum())
    moved = Pieces(new_src, length, np.arange(n, dtype=np.int64), number[pieces.seq[inside]],
                   pieces.offset[inside], len(seqs))  # fmt: skip
    return _Open(kept, kept_mask, moved, ids.take(pa.array(pieces.doc[inside])), fill[seqs].tolist())


def _assemble_closed(
    tokens: np.ndarray, mask: np.ndarray | None, pieces: Pieces, ids: pa.Array, closed: np.ndarray, config: PackConfig
) -> pa.Table:
    seqs = np.flatnonzero(closed)
    if not len(seqs):
        empty = SEQUENCE_SCHEMA.empty_table()
        return empty if mask is None else empty.append_column(LOSS_MASK, pa.array([], pa.list_(pa.int8())))
    inside, number = _select(pieces, seqs)
    chosen = Pieces(pieces.src[inside], pieces.length[inside], pieces.doc[inside], number[pieces.seq[inside]],
                    pieces.offset[inside], len(seqs))  # fmt: skip
    packed = assemble(tokens, chosen, ids, config)
    if mask is None:
        return packed
    # The loss mask travels exactly as the tokens do: BOS and padding 0, EOS 1 (the model learns to stop).
    mask_config = config.model_copy(update={"bos_id": 0, "eos_id": 1, "pad_id": 0})
    column = assemble(mask.astype(np.int32), chosen, ids, mask_config).column("input_ids").combine_chunks()
    values = pc.cast(column.values, pa.int8())
    return packed.append_column(LOSS_MASK, pa.ListArray.from_arrays(column.offsets, values))


def mask_stream(table: pa.Table, config: PackConfig) -> np.ndarray:
    mask_config = config.model_copy(update={"bos_id": 0, "eos_id": 1, "pad_id": 0})
    if LOSS_MASK not in table.column_names:
        return np.zeros(0, np.int8)
    masks = table.select([LOSS_MASK]).rename_columns([TOKEN_IDS])
    return document_stream(masks, mask_config)[0].astype(np.int8)


def frame_documents(table: pa.Table, config: PackConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The document layout of a batch: every document's ids framed by BOS/EOS as one flat stream (mix copies laid
    out), each document's length, and the loss-mask stream when the batch has one (SFT)."""
    table = expand_copies(table)
    stream, offsets = document_stream(table, config)
    mask = mask_stream(table, config) if LOSS_MASK in table.column_names else None
    return stream, np.diff(offsets), mask


def pack(table: pa.Table, config: PackConfig) -> pa.Table:
    """Packed sequences (SEQUENCE_SCHEMA) from a tokenized document batch, in a deterministic order."""
    return Packer(config).add(table, final=True)


def finish(packer: Packer) -> pa.Table:
    """The sequences still open at the end of a split."""
    return packer.add(pa.table({}), final=True)


def assemble(stream: np.ndarray, pieces: Pieces, doc_ids: pa.Array, config: PackConfig) -> pa.Table:
    seq_len = config.seq_len
    tokens = np.empty(pieces.n_seq * seq_len, np.int32)
    _scatter(tokens, pieces.seq * seq_len + pieces.offset, pieces.src, pieces.length, stream)
    # Pieces sorted by (sequence, offset) give each sequence's boundaries in order.
    order = np.lexsort((pieces.offset, pieces.seq))
    seq, doc = pieces.seq[order], pieces.doc[order]
    piece_ends = (pieces.offset + pieces.length)[order]
    per_seq = np.bincount(seq, minlength=pieces.n_seq)
    filled = np.bincount(seq, weights=pieces.length[order], minlength=pieces.n_seq).astype(np.int64)
    padded = np.flatnonzero(filled < seq_len)  # pieces fill each sequence from 0; padding is its tail
    _fill(tokens, padded * seq_len + filled[padded], seq_len - filled[padded], config.pad_id)
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
