"""Cheap heads on frozen embeddings and the torch training loop they (and the comparisons) share.

Every head's name and facts live in ``petprobe.catalogue`` (a leaf the file layout and params
use too). ``metrics`` (classification metrics and their intervals), ``logreg`` (LogRegHead), ``torch_head`` (TorchHead),
``trained`` (reading a dataset's saved heads), ``training`` (one supervised loop), ``comparisons``
(the comparisons' nets and protocol), ``finetune`` (fine-tuning the last block from a probe).
"""
