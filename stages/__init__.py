"""petprobe: a DVC pipeline of frozen pretrained backbones plus cheap heads.

Each ``stages/<stage>.py`` runs as ``python -m stages.<stage> <dataset>``; the other modules hold
the domain code those stages share (params, datasets, images, backbones, heads, ...).
"""
