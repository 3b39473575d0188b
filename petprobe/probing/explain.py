"""What a trained classifier looks at, drawn and measured, for one dataset's test images.

``explain_test_images`` picks the images, computes every map once and returns the figures, the
report (headline numbers for ``metrics/<ds>/explain.json``) and the mean deletion/insertion curves.

Which images (all from the test split, never trained on by the heads):
- *measured*: up to ``n_images``, those with a trimap first (a seeded shuffle of each group), so
  localisation runs on as many trimap images as the budget allows; deletion/insertion on the
  first ``faithfulness_images`` of them and the sanity check on the first ``sanity_images``;
- *shown*: the first ``per_class`` test images of every class present, and the ``mistakes`` most
  confident mistakes (by the head's probabilities from the embed stage's features).
Every map explains the class the model predicts for that image (what drove its decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from petprobe.data.images import load_rgb
from petprobe.embedding.embed import fold_batchnorm
from petprobe.errors import PetprobeError
from petprobe.probing.attribution import (
    COMPLETENESS_TOLERANCE,
    RANDOMISATIONS,
    GradCAM,
    IntegratedGradients,
    RandomMap,
    feature_maps,
    randomised,
)
from petprobe.probing.classifier import PixelClassifier
from petprobe.probing.explain_figures import attribution_figure, curves_figure, feature_map_figure, sanity_figure
from petprobe.probing.measures import (
    TRIMAP_BACKGROUND,
    centred_gaussian,
    constant_maps,
    curve_auc,
    deletion_insertion,
    mean_ci95,
    pet_share,
    pointing_hits,
    rank_correlation,
    read_trimap,
    trimap_like,
    uniform_map,
)

__all__ = ["Explanation", "MeasuredImages", "pick_measured_images", "attribution_methods", "attribute",
           "measure_localisation", "measure_faithfulness", "sanity_check", "draw_shown", "draw_feature_maps",
           "explain_test_images", "explain_headline", "explain_notes"]


@dataclass
class Explanation:
    report: dict
    figures: dict = field(default_factory=dict)  # PNG name -> matplotlib Figure
    curves: dict = field(default_factory=dict)  # "deletion"/"insertion" -> rows {fraction, method: mean p}


def _load(paths: list[str], trimaps: list[Path | None], transforms):
    """[0,1] images ``(N, 3, H, W)`` and, per image, its trimap transformed alike (or None)."""
    images, masks, unusable = [], [], 0
    for path, trimap_path in zip(paths, trimaps):
        try:
            photo = load_rgb(path)
        except OSError as err:
            raise PetprobeError(f"cannot read an image ({err}); rerun prepare") from None
        mask = None
        if trimap_path is not None:
            try:
                trimap = read_trimap(trimap_path, photo.size)
            except PetprobeError:
                unusable += 1  # e.g. a photo whose EXIF rotation its trimap does not share
            else:
                pixels, mask = trimap_like(photo, trimap, transforms)
        images.append(pixels if mask is not None else transforms(photo))
        masks.append(mask)
    return torch.stack(images), masks, unusable


def _batched(fn, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Maps of ``images`` in batches, on the CPU."""
    return torch.cat([fn(images[i:i + batch_size], targets[i:i + batch_size]).cpu()
                      for i in range(0, len(images), batch_size)])


def _path_attributions(ig: IntegratedGradients, images: torch.Tensor, targets: torch.Tensor,
                       batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Integrated-gradients maps of ``images`` in batches (on the CPU), with each image's completeness error."""
    parts = [ig.attribute(images[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat([p.maps.cpu() for p in parts]), np.concatenate([p.completeness_error for p in parts])


@torch.no_grad()
def _predict(model: PixelClassifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch_size]).softmax(1).cpu() for i in range(0, len(images), batch_size)])


_SHORT = {"grad_cam": "Grad-CAM", "integrated_gradients": "IG"}


def _r(x: float) -> float:
    return round(float(x), 4)


def _put(into: dict, key: str, values, seed: int) -> None:
    """``into[key]`` = the mean of per-image ``values``, ``into[key_ci95]`` = its 95% bootstrap interval
    (a list, which ``dvc metrics show`` leaves out of its table)."""
    mean, ci = mean_ci95(values, seed)
    into[key], into[f"{key}_ci95"] = _r(mean), None if ci is None else [_r(v) for v in ci]


def _completeness(ig: IntegratedGradients, errors: np.ndarray, names: list[str], seed: int) -> dict:
    """Integrated gradients' completeness on the measured images: |sum of attributions - (F(x) - F(black))|
    as a fraction of |F(x) - F(black)|, F the predicted class's logit; per image, its mean and whether
    that mean is within Sundararajan et al.'s 5%."""
    out = {"baseline": "black", "rule": f"trapezoid, alpha = u**{ig.power:g}", "steps": ig.steps,
           "tolerance": COMPLETENESS_TOLERANCE, "n_images": int(errors.size)}
    _put(out, "completeness_error", errors, seed)
    out["completeness_error_max"] = _r(errors.max()) if errors.size else None
    out["n_over_tolerance"] = int((errors > COMPLETENESS_TOLERANCE).sum())
    out["mean_within_tolerance"] = bool(errors.size and errors.mean() <= COMPLETENESS_TOLERANCE)
    out["per_image"] = [{"image": name, "completeness_error": _r(e)} for name, e in zip(names, errors)]
    return out


def _pick_measured(test: pd.DataFrame, trimaps: list[Path | None], n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    with_trimap = [i for i, t in enumerate(trimaps) if t is not None]
    without = [i for i, t in enumerate(trimaps) if t is None]
    return ([with_trimap[i] for i in rng.permutation(len(with_trimap))]
            + [without[i] for i in rng.permutation(len(without))])[:n]


def _pick_shown(test: pd.DataFrame, proba: np.ndarray, classes: list[str], per_class: int,
                mistakes: int) -> tuple[list[int], list[int]]:
    labels = test.label.to_numpy()
    by_class = [i for c in classes for i in np.flatnonzero(labels == c)[:per_class].tolist()]
    predicted = np.asarray(classes)[proba.argmax(1)]
    wrong = np.flatnonzero(predicted != labels)
    confident = wrong[np.argsort(-proba[wrong].max(1), kind="stable")][:mistakes].tolist()
    return by_class, confident


def shown_captions(labels: list[str], head_proba: np.ndarray, pixel_proba: np.ndarray,
                   classes: list[str]) -> list[str]:
    """'true X / pred Y p=..' by the head's probabilities, plus the pixel path's class where it differs."""
    captions = []
    for label, head_p, pixel_p in zip(labels, head_proba, pixel_proba):
        t, q = int(head_p.argmax()), int(pixel_p.argmax())
        caption = f"true {label}\npred {classes[t]} p={float(head_p[t]):.2f}"
        if q != t:
            caption += f"\n(pixel path: {classes[q]} {float(pixel_p[q]):.2f})"
        captions.append(caption)
    return captions


@dataclass
class MeasuredImages:
    """The measured test images (on the device), each one's trimap mask in model-input geometry (or
    None), their rows in the test table, the class the model predicts for each (the class every map
    explains) and how many trimaps could not be used."""

    images: torch.Tensor
    masks: list
    rows: list[int]
    targets: torch.Tensor
    unusable: int

    @property
    def located(self) -> list[int]:
        """Indices of the images with a trimap (they come first)."""
        return [i for i, m in enumerate(self.masks) if m is not None]


def pick_measured_images(model: PixelClassifier, test: pd.DataFrame, trimaps: list[Path | None], transforms, *,
                         n_images: int, keep: int, seed: int, batch_size: int, device) -> MeasuredImages:
    """Up to ``n_images`` test images, those with a trimap first (a seeded shuffle of each group),
    loaded; past the trimap images only the first ``keep`` are kept (the faithfulness and sanity
    images), since only localisation needs the rest."""
    chosen = _pick_measured(test, trimaps, n_images, seed)
    images, masks, unusable = _load(test.path.iloc[chosen].tolist(), [trimaps[i] for i in chosen], transforms)
    located = [i for i, m in enumerate(masks) if m is not None]
    keep = max(located[-1] + 1 if located else 0, keep)
    images, masks, chosen = images[:keep].to(device), masks[:keep], chosen[:keep]
    targets = _predict(model, images, batch_size).argmax(1).to(device)
    return MeasuredImages(images, masks, chosen, targets, unusable)


def attribution_methods(model: PixelClassifier, cam_layer: str, *, ig_steps: int, batch_size: int) -> dict:
    """``{name: method}``: Grad-CAM at ``cam_layer`` and integrated gradients with ``ig_steps`` steps.

    Integrated gradients' many gradient passes run on a copy with BatchNorm folded into the
    convolutions, in channels-last layout (the embed stage's inference form; the same function):
    ~1.7x faster on CPU."""
    folded = fold_batchnorm(model).to(memory_format=torch.channels_last)
    return {m.name: m for m in (GradCAM(model, cam_layer), IntegratedGradients(folded, steps=ig_steps,
                                                                                 batch_size=batch_size))}


def attribute(methods: dict, measured: MeasuredImages, batch_size: int, tick) -> tuple[dict, np.ndarray]:
    """Every method's maps of the measured images, and integrated gradients' completeness error per image."""
    images, targets = measured.images, measured.targets
    maps = {GradCAM.name: _batched(methods[GradCAM.name], images, targets, batch_size)}
    tick(len(images))
    maps[IntegratedGradients.name], errors = _path_attributions(methods[IntegratedGradients.name], images, targets,
                                                                batch_size)
    tick(len(images))
    return maps, errors


def measure_localisation(measured: MeasuredImages, maps: dict, labels: list[str], *, seed: int,
                         title: str) -> tuple[dict, object | None]:
    """Pet share and pointing game of every map on the trimap images, against uniform and
    centred-Gaussian maps, and the localisation figure (None without trimaps). ``labels``: the
    measured images' class names."""
    located, masks, images = measured.located, measured.masks, measured.images
    localisation: dict = {"n_images": len(located), "n_trimaps_unusable": measured.unusable}
    if not located:
        return localisation, None
    tri = torch.stack([masks[i] for i in located])
    n, h, w = tri.shape
    baselines = {"uniform": uniform_map(n, h, w), "centred_gaussian": centred_gaussian(n, h, w)}
    shares = {name: pet_share(m[located], tri) for name, m in maps.items()}
    shares.update({name: pet_share(m, tri) for name, m in baselines.items()})
    hits = {name: pointing_hits(m[located], tri) for name, m in maps.items()}
    hits["centred_gaussian"] = pointing_hits(baselines["centred_gaussian"], tri)
    # Every pixel ties in a uniform map: its pointing game is the chance of landing on pet or border.
    hits["uniform"] = (tri != TRIMAP_BACKGROUND).double().mean((1, 2)).numpy()
    for name in shares:
        localisation[name] = {}
        _put(localisation[name], "pet_share", shares[name], seed)
        _put(localisation[name], "pointing", hits[name], seed)
    for name in maps:
        _put(localisation[name], "pet_share_minus_uniform", shares[name] - shares["uniform"], seed)
    shown = located[:6]
    figure = attribution_figure(
        images[shown].cpu(), [f"{labels[i]}\npet share: " + ", ".join(
            f"{_SHORT[name]} {shares[name][j]:.2f}" for name in maps) for j, i in enumerate(shown)],
        {name: m[shown] for name, m in maps.items()}, trimaps=tri[:len(shown)],
        title=f"{title}\nwhite: the pet's outline (trimap); pet share = share of the map's mass on the pet")
    return localisation, figure


def measure_faithfulness(model: PixelClassifier, measured: MeasuredImages, maps: dict, *, n_images: int,
                         steps: int, deletion: str, seed: int, title: str, tick) -> tuple[dict, dict, object]:
    """Deletion/insertion AUCs of every map and of a random order on the first ``n_images`` measured
    images (``steps`` points, deleted squares become ``deletion``), the mean curves and their figure."""
    k = min(n_images, len(measured.images))
    images, targets = measured.images[:k], measured.targets[:k]
    curve_sets = {}
    faithfulness: dict = {"n_images": k, "steps": steps}  # deletion: squares imputed (ROAD), blurred or blacked out
    all_maps = {**{name: m[:k] for name, m in maps.items()}, "random": RandomMap(seed)(images, targets)}
    for name, m in all_maps.items():
        curve_sets[name] = deletion_insertion(model, images, targets, m, steps=steps, deletion=deletion, seed=seed)
        tick(k)
    aucs = {name: {kind: curve_auc(c["fraction"], c[kind]) for kind in ("deletion", "insertion")}
            for name, c in curve_sets.items()}
    for name, kinds in aucs.items():
        faithfulness[name] = {}
        for kind, v in kinds.items():
            _put(faithfulness[name], f"{kind}_auc", v, seed)
            if name != "random":
                _put(faithfulness[name], f"{kind}_auc_minus_random", v - aucs["random"][kind], seed)
    fractions = curve_sets["random"]["fraction"]
    curves = {kind: [{"fraction": _r(f), **{name: _r(c[kind][:, j].mean()) for name, c in curve_sets.items()}}
                     for j, f in enumerate(fractions)] for kind in ("deletion", "insertion")}
    figure = curves_figure(curves, title=f"{title}\np(predicted class) as 16-px squares are deleted ({deletion}) / "
                                         f"inserted in map order, mean of {k} images")
    return faithfulness, curves, figure


def sanity_check(model: PixelClassifier, measured: MeasuredImages, maps: dict, *, n_images: int, threshold: float,
                 cam_layer: str, ig_steps: int, batch_size: int, seed: int, title: str,
                 tick) -> tuple[dict, object | None]:
    """The model-randomisation check on the first ``n_images`` measured images: each method's rank
    correlation with its maps of re-drawn models (a method at or above ``threshold``, or with
    constant trained maps, is flagged), and the sanity figure (None without images)."""
    s = min(n_images, len(measured.images))
    images, targets = measured.images[:s], measured.targets[:s]
    sanity: dict = {"n_images": s, "threshold": threshold, "flagged": []}
    randomised_maps: dict = {name: {"original": maps[name][:s]} for name in maps}
    for name in maps:
        # A constant map of the trained model cannot show that the map depends on the weights.
        sanity[name] = {"constant_trained_maps": int(constant_maps(maps[name][:s]).sum())}
        if sanity[name]["constant_trained_maps"]:
            sanity["flagged"].append(name)
    for part in RANDOMISATIONS:
        other = randomised(model, part, seed)
        for name, method in attribution_methods(other, cam_layer, ig_steps=ig_steps, batch_size=batch_size).items():
            randomised_maps[name][part] = _batched(method, images, targets, batch_size)
            rho = rank_correlation(maps[name][:s], randomised_maps[name][part])
            defined = rho[np.isfinite(rho)]
            if defined.size:
                _put(sanity[name], part, defined, seed)
            else:
                sanity[name][part], sanity[name][f"{part}_ci95"] = None, None
            sanity[name][f"{part}_n_undefined"] = int(rho.size - defined.size)
            if s and (not defined.size or defined.mean() >= threshold) and name not in sanity["flagged"]:
                sanity["flagged"].append(name)
        tick(s)
    if not s:
        return sanity, None
    return sanity, sanity_figure(images[:min(s, 3)].cpu(), {n: {p: m[:3] for p, m in v.items()}
                                                          for n, v in randomised_maps.items()},
                                 title=f"{title}\nmaps of the trained model, then after re-drawing the "
                                       "head, then the head and the last block")


def draw_shown(model: PixelClassifier, methods: dict, test: pd.DataFrame, rows: list[int], proba: np.ndarray,
               classes: list[str], transforms, *, batch_size: int, device, title: str):
    """The attribution figure of test ``rows`` (captions and maps follow the head's prediction from
    the embed stage's features, what the metrics count; where the differentiable pixel path predicts
    another class, the caption says so) and the images, on the device."""
    images = _load(test.path.iloc[rows].tolist(), [None] * len(rows), transforms)[0].to(device)
    targets = torch.as_tensor(proba[rows].argmax(1))
    pixel_probs = _predict(model, images, batch_size)
    captions = shown_captions(test.label.iloc[rows].tolist(), proba[rows], pixel_probs.numpy(), classes)
    figure = attribution_figure(images.cpu(), captions, {name: _batched(m, images, targets, batch_size)
                                                         for name, m in methods.items()},
                                title=title)
    return figure, images


def draw_feature_maps(model: PixelClassifier, net: torch.nn.Module, images: torch.Tensor, *, depths: int,
                      channels: int, title: str):
    """The backbone's activations of ``images`` at ``depths`` depths, the ``channels`` most active first."""
    normalised = model.normalize(images)
    activations = [[(n, a.cpu()) for n, a in feature_maps(net, x, depths)] for x in normalised]
    return feature_map_figure(images.cpu(), activations, channels=channels,
                              title=f"{title}\nbackbone activations at {depths} depths, most active channels first")


def explain_test_images(model: PixelClassifier, net: torch.nn.Module, transforms, test: pd.DataFrame,
                        trimaps: list[Path | None], proba: np.ndarray, classes: list[str], *, cam_layer: str,
                        cfg, device: torch.device = torch.device("cpu"), title: str = "",
                        progress=None) -> Explanation:
    """Maps, figures and measured numbers for ``test`` (rows path, label; ``trimaps`` per row, None if none).

    The phases in order, each given the settings it uses from ``cfg`` (the ``explain`` section of
    params.yaml, ``params.ExplainParams``): ``pick_measured_images``, ``attribute``,
    ``measure_localisation``, ``measure_faithfulness``, ``sanity_check``, then the shown images
    (``draw_shown``, ``draw_feature_maps``). ``model``: a ``split_classifier`` over ``classes`` (its
    logit order); ``cam_layer``: the name in ``model`` of its backbone's feature map
    (``feature_map_layer``); ``net``: its backbone, for feature maps; ``transforms``: PIL -> [0,1]
    tensor; ``proba``: the head's test probabilities in ``classes`` order (to pick the mistakes
    shown). ``progress(n)`` is called as work gets done.
    """
    tick, seed, batch_size = progress or (lambda n: None), cfg.seed, cfg.batch_size
    model = model.eval().to(device)
    methods = attribution_methods(model, cam_layer, ig_steps=cfg.ig_steps, batch_size=batch_size)
    report: dict = {"grad_cam_layer": cam_layer}
    figures: dict = {}

    # --- measured images: localisation, faithfulness, sanity --------------------------------------------
    measured = pick_measured_images(model, test, trimaps, transforms, n_images=cfg.n_images,
                                    keep=max(cfg.faithfulness_images, cfg.sanity_images), seed=seed,
                                    batch_size=batch_size, device=device)
    maps, errors = attribute(methods, measured, batch_size, tick)
    names = [Path(p).name for p in test.path.iloc[measured.rows]]
    report["integrated_gradients"] = _completeness(methods[IntegratedGradients.name], errors, names, seed)
    # A constant map (e.g. all zero: no channel pushes the class up) locates nothing; counted, never hidden.
    report["constant_maps"] = {"n_images": len(measured.images),
                               **{name: int(constant_maps(m).sum()) for name, m in maps.items()}}
    report["localisation"], figure = measure_localisation(measured, maps, test.label.iloc[measured.rows].tolist(),
                                                          seed=seed, title=title)
    if figure is not None:
        figures["localisation.png"] = figure
    report["faithfulness"], curves, figures["deletion_insertion.png"] = measure_faithfulness(
        model, measured, maps, n_images=cfg.faithfulness_images, steps=cfg.curve_steps, deletion=cfg.deletion,
        seed=seed, title=title, tick=tick)
    report["sanity"], figure = sanity_check(model, measured, maps, n_images=cfg.sanity_images,
                                            threshold=cfg.sanity_threshold, cam_layer=cam_layer, ig_steps=cfg.ig_steps,
                                            batch_size=batch_size, seed=seed, title=title, tick=tick)
    if figure is not None:
        figures["sanity.png"] = figure

    # --- shown images: every class, the most confident mistakes, feature maps ---------------------------
    by_class, confident = _pick_shown(test, proba, classes, cfg.per_class, cfg.mistakes)
    for png, rows, what in (("attribution_classes.png", by_class, "test images of every class"),
                            ("attribution_mistakes.png", confident, "most confident mistakes")):
        if not rows:
            continue
        figures[png], images = draw_shown(model, methods, test, rows, proba, classes, transforms,
                                          batch_size=batch_size, device=device,
                                          title=f"{title}\n{what}; maps explain the head's predicted class")
        tick(len(rows))
        if png == "attribution_classes.png" and cfg.feature_images:
            figures["feature_maps.png"] = draw_feature_maps(model, net, images[:cfg.feature_images],
                                                            depths=cfg.feature_depths, channels=cfg.feature_channels,
                                                            title=title)
    report["n_shown"] = {"classes": len(by_class), "mistakes": len(confident)}
    return Explanation(report=report, figures=figures, curves=curves)


def explain_headline(report: dict) -> dict:
    """Grad-CAM's gains over its content-blind baselines, short flat keys (columns of `dvc metrics show`).

    cam_pet_gain: pet share minus the uniform map's, on the trimap images (absent without trimaps);
    cam_del_gain: random order's deletion AUC minus Grad-CAM's (positive: deleting in map order
    hurts the prediction faster than random, as a faithful map should). Integrated gradients'
    completeness error is in explain.json (the table must fit 200 characters).
    """
    out = {}
    loc, faith = report["localisation"], report["faithfulness"]
    if loc.get("n_images"):
        out["cam_pet_gain"] = loc["grad_cam"]["pet_share_minus_uniform"]
    out["cam_del_gain"] = round(faith["random"]["deletion_auc"] - faith["grad_cam"]["deletion_auc"], 4)
    return out


def explain_notes(report: dict) -> list[str]:
    """What the explain stage tells its user (stderr): the headline numbers, then any warning."""
    loc, faith, ig = report["localisation"], report["faithfulness"], report["integrated_gradients"]
    where = (f"Grad-CAM pet share {loc['grad_cam']['pet_share']:.2f} vs uniform {loc['uniform']['pet_share']:.2f} "
             f"on {loc['n_images']} trimap images, " if loc["n_images"] else "")
    notes = [f"{where}deletion AUC Grad-CAM {faith['grad_cam']['deletion_auc']:.3f} vs random "
             f"{faith['random']['deletion_auc']:.3f}, IG completeness error {ig['completeness_error']:.3f} "
             f"(over {ig['tolerance']:g} on {ig['n_over_tolerance']} of {ig['n_images']} images), sanity flagged "
             f"{report['sanity']['flagged'] or 'none'}"]
    if not ig["mean_within_tolerance"]:
        notes.append(f"integrated gradients' mean completeness error {ig['completeness_error']:.3f} is over "
                     f"{ig['tolerance']:g} (Sundararajan et al.): their maps are a coarse approximation; raise "
                     f"explain.ig_steps (now {ig['steps']})")
    constant = {name: n for name, n in report["constant_maps"].items() if name != "n_images" and n}
    if constant:
        notes.append(f"constant maps (they locate nothing) on {report['constant_maps']['n_images']} measured "
                     f"images: {constant}")
    return notes
