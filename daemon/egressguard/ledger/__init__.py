"""The data usage ledger: one SQLite row per closed flow (who sent which data classes where),
fed from flow events, queried by `egressctl usage` and `egressctl flows --since`."""
