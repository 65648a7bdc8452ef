"""Pipeline: turns a workflow spec into a Dask graph of coarse per-partition tasks and runs it."""
