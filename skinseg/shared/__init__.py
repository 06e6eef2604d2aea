"""Pieces both sides use: errors, atomic writes, the one image reader, config, dataset pairing."""
