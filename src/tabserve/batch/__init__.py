"""Offline batch scoring of CSV and parquet files (``tabserve predict``); needs the [batch] extra (pyarrow)."""

DEFAULT_BATCH_ROWS = 65_536  # rows per onnxruntime call: large enough to amortise the call, small in memory
