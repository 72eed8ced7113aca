"""Shared plumbing: errors, atomic writes, raster and vector I/O, storage."""
