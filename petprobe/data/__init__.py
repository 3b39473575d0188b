"""Datasets as files: the dataset registry and splits, safe downloads and archives, image checks and
loading, where raw files come from, and the manifest of usable images."""
