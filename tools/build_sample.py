"""Build petprobe's embedded mini-sample (petprobe/data/sample_data/) from Oxford-IIIT Pet files.

    python tools/build_sample.py /path/to/oxford-iiit-pet     # official layout: images/, annotations/

A maintainer's tool, run once; the output is committed. Per breed (all 37) it keeps the first
``TRAINVAL`` trainval images in the official list order (``TRAINVAL_TRIMAP`` for the breeds whose
trimaps the source holds, so explain has photos to localise on), and the first ``TEST`` test images
of every breed that has test images there. Each photo is downscaled to a shorter side of ``SIDE`` px
(Lanczos; never enlarged) and saved as a baseline JPEG at quality ``QUALITY`` without metadata;
each trimap is resized to its photo's new size with nearest neighbour (it keeps the values 1, 2, 3).
The official lists are restricted to the kept images (header lines, membership and order kept).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

SIDE = 256
QUALITY = 85
TRAINVAL, TRAINVAL_TRIMAP, TEST = 4, 6, 4
OUT = Path(__file__).resolve().parents[1] / "petprobe" / "data" / "sample_data" / "oxford-iiit-pet"


def entries(path: Path) -> list[tuple[str, str]]:
    """(stem, line) of an official list file, header lines left out."""
    return [(line.split()[0], line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def pick(source: Path) -> list[str]:
    annotations = source / "annotations"
    with_trimaps = {p.stem.rsplit("_", 1)[0] for p in (annotations / "trimaps").glob("*.png")}  # breeds
    present = {p.stem for p in (source / "images").glob("*.jpg")}
    chosen: list[str] = []
    for split_file, per_breed in (("trainval.txt", None), ("test.txt", TEST)):
        counts: dict[str, int] = {}
        for stem, _ in entries(annotations / split_file):
            breed = stem.rsplit("_", 1)[0]
            if stem not in present or Image.open(source / "images" / f"{stem}.jpg").format != "JPEG":
                continue
            limit = per_breed or (TRAINVAL_TRIMAP if breed in with_trimaps else TRAINVAL)
            if counts.get(breed, 0) < limit:
                counts[breed] = counts.get(breed, 0) + 1
                chosen.append(stem)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an oxford-iiit-pet folder in the official layout")
    source = parser.parse_args().source
    chosen = set(pick(source))
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "images").mkdir(parents=True)
    (OUT / "annotations" / "trimaps").mkdir(parents=True)
    for stem in sorted(chosen):
        with Image.open(source / "images" / f"{stem}.jpg") as photo:
            scale = min(1.0, SIDE / min(photo.size))
            size = (round(photo.width * scale), round(photo.height * scale))
            photo.convert("RGB").resize(size, Image.LANCZOS).save(OUT / "images" / f"{stem}.jpg", "JPEG",
                                                                  quality=QUALITY, optimize=True)
            trimap = source / "annotations" / "trimaps" / f"{stem}.png"
            if trimap.is_file():
                with Image.open(trimap) as mask:
                    assert mask.size == photo.size, f"{trimap}: not the size of its photo"
                    mask.resize(size, Image.NEAREST).save(OUT / "annotations" / "trimaps" / f"{stem}.png", optimize=True)
    for name in ("list.txt", "trainval.txt", "test.txt"):
        lines = (source / "annotations" / name).read_text().splitlines()
        kept = [line for line in lines if line.startswith("#") or (line.split() and line.split()[0] in chosen)]
        (OUT / "annotations" / name).write_text("".join(line + "\n" for line in kept))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(chosen)} photos, {len(list((OUT / 'annotations/trimaps').iterdir()))} trimaps, {size / 1e6:.2f} MB -> {OUT}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
