"""Frames the dedup step keeps between its phases: written a partition to a file on the cluster and read back
the same, with nothing left in the workers' memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    sigs = [rng.bytes(448) if k % 7 else None for k in range(n)]
    ids = [f"doc-{k}-é" if k % 5 else None for k in range(n)]
    return pd.DataFrame(
        {
            "order": rng.integers(-(2**62), 2**62, n, dtype=np.int64),
            "kind": pd.Series(np.where(rng.random(n) < 0.5, "exact", "near"), dtype=object),  # as the edges
            "similarity": rng.random(n).astype(np.float32),
            "sig": pd.arrays.ArrowExtensionArray(pa.array(sigs, pa.binary())),
            "kept_id": pd.arrays.ArrowExtensionArray(pa.array(ids, pa.string())),
        }
    )


def test_a_kept_frame_reads_back_the_same_and_leaves_nothing_in_the_workers(tmp_path: Path) -> None:
    import dask
    import dask.dataframe as dd
    from distributed import Client

    from pipeline.cluster import local_cluster
    from pipeline.frame_runs import InThisThread, OnCluster

    # as in the dedup step (``pipeline.dedup.compute_decisions``): object columns stay object
    with dask.config.set({"dataframe.convert-string": False}):
        rng = np.random.default_rng(3)
        pieces = [_frame(rng, n) for n in (5_000, 0, 1, 20_000)]  # an empty partition among them
        expected = pd.concat(pieces, ignore_index=True)
        frame = dd.from_delayed([_delayed(p) for p in pieces], meta=pieces[0].iloc[:0], verify_meta=False)
        with local_cluster(2) as cluster, Client(cluster) as client:
            kept = OnCluster(client, str(tmp_path / "scratch")).keep(frame, "edges")
            held = client.run(lambda dask_worker: dask_worker.state.nbytes)
            # the frame is 11 MB; a few bytes of counts may still be on their way out
            assert sum(held.values()) < 64 * 2**10, f"kept data stays in the workers' memory: {held}"
            got = kept.frame.compute().reset_index(drop=True)
            assert kept.frame.npartitions == 4
            staged = OnCluster(client, str(tmp_path / "scratch")).stage(frame, "staged")  # a join's output
            pd.testing.assert_frame_equal(staged.compute().reset_index(drop=True), expected)
            assert len(list((tmp_path / "scratch" / "staged").iterdir())) == 4
        files = sorted(p.name for p in (tmp_path / "scratch" / "edges").iterdir())
        assert files == [f"part-{k:05d}.parquet" for k in range(4)]
        assert kept.rows == len(expected) == 25_001
        pd.testing.assert_frame_equal(got, expected)
        assert InThisThread().stage(frame, "staged") is frame  # one task holds one partition at a time anyway
        in_thread = InThisThread().keep(frame, "edges")
        assert in_thread.rows == kept.rows
        pd.testing.assert_frame_equal(in_thread.frame.compute(scheduler="sync").reset_index(drop=True), expected)


def _delayed(piece: pd.DataFrame) -> object:
    from dask import delayed

    return delayed(lambda: piece)()
