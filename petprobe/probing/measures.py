"""How good an attribution map is, measured: localisation on trimaps, faithfulness, sanity.

- *Localisation* on the Oxford-IIIT Pet trimaps (1 = pet, 2 = background, 3 = border):
  ``pet_share`` is the share of a map's mass on pet pixels, border pixels left out of both sides
  (the energy-based pointing game of Wang et al. 2020, with the pet mask in place of a box);
  ``pointing_hits`` is the pointing game (Zhang et al. 2016): the map's maximum falls on the pet,
  the border counting as a hit (the border band plays the role of the game's 15-px tolerance).
  ``uniform_map`` and ``centred_gaussian`` are the two content-blind baselines.
- *Faithfulness* (Petsiuk et al. 2018, RISE): ``deletion_insertion`` removes 16-px squares in the
  map's order or adds them (onto a blurred copy) and records p(class) at each step; the area under
  each curve (``curve_auc``) is low for deletion and high for insertion when the map points at what
  the model uses. Removed squares are filled by ROAD's noisy linear imputation (Rong et al. 2022,
  ``noisy_linear_impute``): each removed pixel the weighted mean of its 8 neighbours, plus a little
  noise, so the fill continues its surroundings and the removal pattern itself carries no class
  evidence (a blurred or black square does: the shape of what was removed leaks the order).
- *Sanity* (Adebayo et al. 2018): ``rank_correlation`` of each image's map before and after the
  model's weights are re-drawn; a map that does not change does not explain this model. A
  constant map (``constant_maps``) has no rank correlation: it is counted and flagged, never
  scored as a change.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from petprobe.data.images import open_image_file, size_problem
from petprobe.errors import PetprobeError

__all__ = ["TRIMAP_PET", "TRIMAP_BACKGROUND", "TRIMAP_BORDER", "read_trimap", "trimap_like", "pet_share",
           "pointing_hits", "uniform_map", "centred_gaussian", "noisy_linear_impute", "deletion_insertion", "curve_auc",
           "constant_maps", "rank_correlation", "mean_ci95"]

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3


def read_trimap(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An official trimap PNG as a uint8 array ``(H, W)`` of 1 (pet), 2 (background), 3 (border).

    ``size``: the ``(width, height)`` of its photo, which it must match. A file that is not such a
    trimap raises PetprobeError naming it.
    """
    try:  # through the image readers' checks: a regular file inside data/raw/<ds>, of bounded size
        with open_image_file(path) as fh, Image.open(fh) as im:
            found = im.size
            if size is not None and found != tuple(size):  # before decoding: the photo's size bounds it
                raise PetprobeError(f"{path}: trimap is {found[0]}x{found[1]} px, its photo {size[0]}x{size[1]}")
            if (problem := size_problem(*found)) is not None:
                raise PetprobeError(f"{path}: not a usable trimap PNG ({problem})")
            trimap = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im, dtype=np.uint8)
    except OSError as err:
        raise PetprobeError(f"{path}: not a readable trimap PNG ({err})") from None
    values = set(np.unique(trimap).tolist())
    if not values <= {TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER}:
        raise PetprobeError(f"{path}: trimap values {sorted(values)}, expected 1 (pet), 2 (background), 3 (border)")
    return trimap


def trimap_like(image, trimap: np.ndarray, transforms) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, trimap)`` through the same resize and crop: ``transforms`` (a torchvision v2 pipeline)
    sees the trimap as a mask, so it is resized with nearest neighbour and keeps its three values."""
    from torchvision import tv_tensors

    pixels, mask = transforms(image, tv_tensors.Mask(torch.from_numpy(np.array(trimap))))
    return pixels, mask.as_subclass(torch.Tensor).to(torch.uint8)


def _flat(maps: torch.Tensor) -> torch.Tensor:
    return maps.reshape(maps.shape[0], -1).double()


def pet_share(maps: torch.Tensor, trimaps: torch.Tensor) -> np.ndarray:
    """Per image, mass on pet / mass on pet + background (border excluded), for maps ``(N, H, W)`` >= 0.

    An all-zero map (nothing attributed) scores the pet's area share, as a uniform map would.
    """
    maps, trimaps = _flat(maps), trimaps.reshape(trimaps.shape[0], -1)
    pet, background = trimaps == TRIMAP_PET, trimaps == TRIMAP_BACKGROUND
    on_pet, total = (maps * pet).sum(1), (maps * (pet | background)).sum(1)
    area = pet.sum(1).double() / (pet | background).sum(1).clamp_min(1)
    return torch.where(total > 0, on_pet / total.clamp_min(1e-300), area).numpy()


def pointing_hits(maps: torch.Tensor, trimaps: torch.Tensor) -> np.ndarray:
    """Per image, whether the map's maximum lies on the pet or its border (1.0) or not (0.0)."""
    flat, trimaps = _flat(maps), trimaps.reshape(trimaps.shape[0], -1)
    peak = flat.argmax(1, keepdim=True)
    return (trimaps.gather(1, peak)[:, 0] != TRIMAP_BACKGROUND).double().numpy()


def uniform_map(n: int, height: int, width: int) -> torch.Tensor:
    """The baseline that knows nothing: equal mass everywhere. Its pointing-game score is the chance
    that a random pixel is on the pet, which ``pointing_hits`` cannot give (every pixel ties)."""
    return torch.ones(n, height, width)


def centred_gaussian(n: int, height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """The photographer's baseline: a Gaussian at the image centre, ``sigma`` a fraction of each side."""
    y = torch.linspace(-0.5, 0.5, height)[:, None] / sigma
    x = torch.linspace(-0.5, 0.5, width)[None, :] / sigma
    return torch.exp(-(x ** 2 + y ** 2) / 2).expand(n, height, width).clone()


def _pixel_order(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Per image, pixel indices from highest to lowest map value; ties (a ReLU's zeros) in a seeded random order."""
    rng = np.random.default_rng(seed)
    flat = _flat(maps).numpy()
    return torch.from_numpy(np.stack([np.lexsort((rng.random(row.size), -row)) for row in flat]))

# ROAD's neighbour weights (Rong et al. 2022): direct neighbours 1/6, diagonal ones 1/12.
_NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))


def _linear_fill(pixels: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """``pixels`` (C, H, W) with the ``gone`` (H, W) pixels solved as the weighted mean of their neighbours.

    One sparse linear system for all removed pixels (known neighbours on the right-hand side),
    neighbours outside the image left out; with nothing known, the image's mean colour.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = pixels.shape
    flat, gone = pixels.reshape(c, -1).copy(), gone.reshape(-1)
    if gone.all():
        flat[:] = flat.mean(1, keepdims=True)
        return flat.reshape(c, h, w)
    where = np.flatnonzero(gone)
    n = where.size
    slot = np.full(h * w, -1, dtype=np.int64)
    slot[where] = np.arange(n)
    y, x = np.divmod(where, w)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    diagonal, rhs = np.zeros(n), np.zeros((n, c))
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = np.flatnonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))
        j = ny[inside] * w + nx[inside]
        diagonal[inside] += weight
        unknown = gone[j]
        rows.append(inside[unknown])
        cols.append(slot[j[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        np.add.at(rhs, inside[~unknown], weight * flat[:, j[~unknown]].T)
    vals.insert(0, diagonal)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    flat[:, where] = np.asarray(spsolve(system, rhs)).reshape(n, c).T
    return flat.reshape(c, h, w)


def noisy_linear_impute(image: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01, factor: int = 1,
                        rng: np.random.Generator | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022) of the ``removed`` (H, W) pixels of ``image`` (C, H, W).

    Each removed pixel becomes the weighted mean of its 8 neighbours (direct 1/6, diagonal 1/12),
    solved jointly as a sparse linear system, plus Gaussian noise of std ``noise`` (pixel values in
    [0, 1]; ROAD's 0.01). Kept pixels are returned unchanged. ``factor`` > 1 solves on an image
    average-pooled by ``factor`` and upsamples the fill bilinearly (the noise is added at full
    size): the fill is smooth, so a coarser grid changes it little and costs ``factor**2`` fewer
    unknowns; a removed low-resolution pixel is one any of whose pixels is removed.
    """
    import torch.nn.functional as F

    rng = rng if rng is not None else np.random.default_rng(0)
    removed = removed.to(image.device).bool()
    if not removed.any():
        return image.clone()
    if factor > 1:
        small = F.avg_pool2d(image[None].double(), factor, ceil_mode=True)[0]
        gone = F.max_pool2d(removed[None, None].double(), factor, ceil_mode=True)[0, 0] > 0
        fill = torch.from_numpy(_linear_fill(small.cpu().numpy(), gone.cpu().numpy()))
        fill = F.interpolate(fill[None], size=image.shape[1:], mode="bilinear", align_corners=False)[0]
    else:
        fill = torch.from_numpy(_linear_fill(image.double().cpu().numpy(), removed.cpu().numpy()))
    fill = fill + noise * torch.from_numpy(rng.standard_normal(fill.shape))
    return torch.where(removed, fill.to(image), image)


@torch.no_grad()
def deletion_insertion(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
                       *, steps: int = 10, patch: int = 16, blur_sigma: float = 5.0, deletion: str = "road",
                       road_factor: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """p(target) as ``patch``-pixel squares are deleted or inserted (onto a blurred copy) in map order.

    Squares are ranked by their mean map value (ties in a seeded random order). Whole squares, not
    single pixels: deleting scattered single pixels sprinkles the image with noise no photo has,
    which drops p(class) for any order and makes a random order look as good as any map.
    ``deletion``: what a deleted square becomes: ``"road"`` (ROAD's noisy linear imputation from the
    pixels still there, solved on a grid ``road_factor`` times coarser; see ``noisy_linear_impute``),
    ``"blur"`` (the blurred copy insertion starts from) or ``"black"`` (RISE's constant). Blur and
    black leak: the pattern of blurred or black squares is itself evidence for or against a class,
    whatever order removed them, so a random order can look as good as a faithful map.
    Returns ``{"fraction": (steps + 1,), "deletion": (N, steps + 1), "insertion": (N, steps + 1)}``;
    column k holds p(target) with a fraction k/steps of the squares removed (deletion) or restored
    (insertion), so the first deletion column is the clean image's probability.
    """
    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import gaussian_blur

    n, _, height, width = images.shape
    scores = F.avg_pool2d(maps[:, None].double().cpu(), patch, ceil_mode=True)[:, 0]  # (N, h, w)
    cells = scores.shape[1] * scores.shape[2]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    order = _pixel_order(scores, seed)
    counts = torch.as_tensor(np.round(fractions * cells).astype(np.int64))
    kernel = 2 * int(3 * blur_sigma) + 1
    curves = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    for i in range(n):
        rank = torch.empty(cells, dtype=torch.long)
        rank[order[i]] = torch.arange(cells)
        chosen = (rank[None, :] < counts[:, None]).float().view(-1, 1, *scores.shape[1:])
        chosen = F.interpolate(chosen, scale_factor=patch, mode="nearest")[..., :height, :width].to(images.device)
        image = images[i:i + 1]
        blurred = gaussian_blur(image, [kernel, kernel], [blur_sigma, blur_sigma])
        if deletion == "road":
            rng = np.random.default_rng([seed, i])
            deleted = torch.cat([noisy_linear_impute(image[0], mask[0], factor=road_factor, rng=rng)[None]
                                 for mask in chosen])
        else:
            removed = blurred if deletion == "blur" else torch.zeros_like(image)
            deleted = image * (1 - chosen) + removed * chosen
        variants = {"deletion": deleted,
                    "insertion": blurred * (1 - chosen) + image * chosen}
        for kind, batch in variants.items():
            curves[kind][i] = model(batch).softmax(1)[:, int(targets[i])].double().cpu().numpy()
    return {"fraction": fractions, **curves}


def curve_auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Per row of ``curves``, the area under p(class) over the fraction of pixels (trapezoid rule)."""
    from sklearn.metrics import auc

    return np.array([auc(fractions, row) for row in curves])


def constant_maps(maps: torch.Tensor) -> np.ndarray:
    """Per image, whether its map ``(N, H, W)`` is constant (all zero included): it ranks no pixel above
    another, so it locates nothing, orders no deletion and cannot pass or fail a sanity check."""
    flat = _flat(maps)
    return (flat.amax(1) == flat.amin(1)).numpy()


def rank_correlation(maps: torch.Tensor, other: torch.Tensor) -> np.ndarray:
    """Per image, Spearman's rank correlation of two maps; NaN where either is constant (undefined:
    a constant map ranks nothing, so it neither resembles the other nor differs from it)."""
    from scipy.stats import spearmanr

    out = []
    for a, b in zip(_flat(maps).numpy(), _flat(other).numpy()):
        out.append(float("nan") if a.min() == a.max() or b.min() == b.max() else float(spearmanr(a, b).statistic))
    return np.array(out)


def mean_ci95(values, seed: int = 0) -> tuple[float, list[float] | None]:
    """Mean of per-image values and its 95% bootstrap interval (percentile, 2,000 resamples; None below 2 values)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2 or values.min() == values.max():
        return mean, None if values.size < 2 else [mean, mean]
    ci = bootstrap((values,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                   random_state=seed).confidence_interval
    return mean, [float(ci.low), float(ci.high)]
