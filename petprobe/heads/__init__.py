"""Cheap heads on frozen embeddings and the torch training loop they (and the comparisons) share.

``logreg`` (LogRegHead), ``torch_head`` (TorchHead), ``trained`` (reading a dataset's saved heads),
``training`` (one supervised loop), ``comparisons`` (fine-tuning the last block, a CNN from scratch).
"""
