"""finetune@<ds> (optional, off by default): fine-tune the backbone's last block, for comparison.

Reads finetune.enabled, finetune.epochs, finetune.lr, finetune.batch_size, finetune.seed, backbone,
embed.batch_size, embed.num_workers, embed.precision. Switched off it only writes
metrics/<ds>/finetune.json = {"enabled": false}. Switched on: the trunk before the last block stays
frozen (its activations are computed once); the last block, the final conv and a linear layer are
trained, the linear layer starting from a logistic probe with logreg's chosen C. The heads' protocol:
the epoch count is chosen by validation loss on a run trained on train, then the net is trained
again on train+val (probe fit on train+val) for that many epochs and tested. Writes {enabled, backbone, best_epoch,
epochs_run, val_before, val, test} to metrics/<ds>/finetune.json; evaluate copies `test` into
metrics/<ds>.json.
"""

from __future__ import annotations

import sys

from petprobe.artefacts import SPLITS, Artefacts
from petprobe.backbones import get_backbone
from petprobe.catalogue import FINETUNE, LOGREG
from petprobe.device import resolve_batch_size, resolve_device, resolve_precision
from petprobe.errors import run_stage
from petprobe.heads.comparisons import trunk_activations
from petprobe.heads.finetune import finetune_last_block
from petprobe.heads.logreg import LogRegHead
from petprobe.outputs import write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    cfg, embed, artefacts = params.finetune, params.embed, Artefacts(ds)
    if not cfg.enabled:
        write_json(artefacts.comparison(FINETUNE.name), {"enabled": False})
        print(f"finetune@{ds}: switched off (dvc exp run -S finetune.enabled=true)", file=sys.stderr)
        return

    manifest, _ = artefacts.read_manifest()
    splits = {s: manifest[manifest.split == s] for s in SPLITS}
    backbone = get_backbone(params.backbone)
    device = resolve_device()
    trunk, tail = backbone.split_last_block(backbone.build())
    acts = {s: trunk_activations(trunk, rows.path.tolist(), backbone.preprocessing,
                                 batch_size=resolve_batch_size(embed.batch_size, device), num_workers=embed.num_workers,
                                 precision=resolve_precision(embed.precision, device), device=device,
                                 desc=f"finetune {ds}: frozen trunk, {s}")
            for s, rows in splits.items()}

    labels = {s: rows.label.to_numpy() for s, rows in splits.items()}
    result = finetune_last_block(tail, acts, labels, LogRegHead.load(artefacts.model(LOGREG.name)).C_, lr=cfg.lr,
                                 batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed, device=device,
                                 desc=f"finetune {ds}", where=f"finetune@{ds}")
    write_json(artefacts.comparison(FINETUNE.name), {"enabled": True, "backbone": backbone.name, **result})
    print(f"finetune@{ds}: val top1 {result['val_before']['top1']:.3f} (probe) -> {result['val']['top1']:.3f} "
          f"(epoch {result['best_epoch']}); test top1 {result['test']['top1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
