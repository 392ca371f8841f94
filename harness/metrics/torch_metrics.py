"""Metrics computed with torch: pyiqa where it has the metric, pytorch_msssim for RGB MS-SSIM.

Variants are rows (pyiqa's idea): each class names the pyiqa metric and its options. The model is built on
the first call and kept (one build per run: the runner creates each metric once); torch and pyiqa are
imported only then, so importing this module for its class attributes (``metrics check``) stays cheap.
Inputs are the uint8 HxWx3 images, scaled to [0, 1] floats on the CPU.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import numpy as np

from harness.metrics import Metric, _check_pair
from harness.metrics import weights as w


def _to_tensor(image: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)


class TorchMetric(Metric):
    packages = ("torch",)
    #: Smallest image side the metric accepts (multi-scale metrics downsample 4 times).
    min_side: ClassVar[int] = 1

    def __init__(self) -> None:
        self._model: Any = None
        self._warned_small = False

    def build(self) -> Any:
        raise NotImplementedError

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x, y).item())

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        _check_pair(self.name, output, reference)
        if min(output.shape[:2]) < self.min_side:
            if not self._warned_small:
                self._warned_small = True
                print(
                    f"metric {self.name!r} needs images of at least {self.min_side} px a side; "
                    f"{output.shape[1]}x{output.shape[0]} gets NaN",
                    file=sys.stderr,
                )
            return math.nan
        import torch

        if self._model is None:
            self._model = self.build()
        with torch.inference_mode():
            return self.score(self._model, _to_tensor(output), _to_tensor(reference))


class PyiqaMetric(TorchMetric):
    packages = ("torch", "pyiqa")
    pyiqa_name: ClassVar[str]

    def build(self) -> Any:
        import pyiqa

        return pyiqa.create_metric(self.pyiqa_name, device="cpu", as_loss=False)


class SSIM(PyiqaMetric):
    name = "ssim"
    pyiqa_name = "ssim"
    description = "SSIM on luma Y (pyiqa ssim: Y rounded to integers, 11x11 Gaussian window sigma 1.5, no downsampling)"


class MS_SSIM(PyiqaMetric):
    name = "ms_ssim"
    pyiqa_name = "ms_ssim"
    min_side = 161
    description = "MS-SSIM on luma Y (pyiqa ms_ssim, 5 scales); see ms_ssim_rgb for the RGB variant"


class MS_SSIM_RGB(TorchMetric):
    name = "ms_ssim_rgb"
    packages = ("torch", "pytorch_msssim")
    min_side = 161
    description = "MS-SSIM on RGB (pytorch_msssim, data range 255, 5 scales; CompressAI's convention)"

    def build(self) -> Any:
        from pytorch_msssim import ms_ssim

        return ms_ssim

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x * 255.0, y * 255.0, data_range=255.0, size_average=True).item())


class LPIPS(PyiqaMetric):
    name = "lpips"
    pyiqa_name = "lpips"
    higher_better = False
    requires = (w.ALEXNET, w.LPIPS_ALEX)
    description = "LPIPS v0.1 with AlexNet features (pyiqa lpips); lower is better"


class LPIPS_VGG(PyiqaMetric):
    name = "lpips_vgg"
    pyiqa_name = "lpips-vgg"
    higher_better = False
    requires = (w.VGG16, w.LPIPS_VGG)
    description = "LPIPS v0.1 with VGG16 features (pyiqa lpips-vgg); lower is better"


class DISTS(PyiqaMetric):
    name = "dists"
    pyiqa_name = "dists"
    higher_better = False
    requires = (w.VGG16, w.DISTS)
    description = "DISTS (pyiqa dists, VGG16 features); lower is better"


class NIQE(PyiqaMetric):
    name = "niqe"
    pyiqa_name = "niqe"
    higher_better = False
    requires = (w.NIQE,)
    description = "NIQE, no-reference (pyiqa niqe on Y; the reference is ignored); lower is better"

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x).item())
