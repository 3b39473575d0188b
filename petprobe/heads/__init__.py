"""Cheap heads on frozen embeddings and the torch training loop they (and the comparisons) share.

``registry`` (every head's name and facts), ``logreg`` (LogRegHead), ``torch_head`` (TorchHead),
``trained`` (reading a dataset's saved heads), ``training`` (one supervised loop), ``comparisons``
(the comparisons' nets and protocol), ``finetune`` (fine-tuning the last block from a probe).
"""
