"""petprobe: how far a frozen pretrained image backbone plus a cheap head gets you, and what it looks at.

The library behind the DVC stages in ``stages/`` and the ``petprobe`` command:

- ``data``: dataset registry and splits, official archives and mirrors, safe unpacking, image checks,
  the manifest;
- ``backbones``: the registry of frozen ImageNet backbones, one module per family;
- ``embedding``: the image loader, the batched, streamed embedding loop and its multi-process sharding;
- ``heads``: logistic regression, a torch head, one training loop, fine-tuning / from-scratch comparisons;
- ``probing``: pixel-space classifiers, ideal images, targeted attacks, transfer;
- ``reporting``: metrics, figures, training curves;
- ``artefacts`` (every file on disk), ``params`` (the schema), ``outputs`` (atomic writes),
  ``device`` (device and precision policy), ``checksums``, ``labels``, ``errors``, ``fetch`` (checked
  HTTP downloads, for weights and archives alike), ``catalogue`` (the backbone and dataset names,
  without their code),
  ``predict`` and ``cli``.
"""

__version__ = "0.1.0"
