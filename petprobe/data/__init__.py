"""Datasets as files: the dataset registry and splits, official archives (fetched with
``petprobe.fetch``, unpacked safely) and local mirrors, image checks and loading, where raw files
come from, and the manifest of usable images."""
