"""The embedded stack: broker, object store, Triton and Postgres started from wheels by `callstream up`."""
