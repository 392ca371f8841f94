"""Metrics computed with torch: pyiqa where it has the metric, pytorch_msssim for RGB MS-SSIM.

Variants are rows (pyiqa's idea): each class names the pyiqa metric and its options. The model is built on
the first call and kept (one build per run: the runner creates each metric once); torch and pyiqa are
imported only then, so importing this module for its class attributes (``metrics check``) stays cheap.
Inputs are the uint8 HxWx3 images, scaled to [0, 1] floats on the CPU.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from harness.metrics import Metric, _check_pair
from harness.metrics import weights as w


def _to_tensor(image: np.ndarray) -> Any:
    import torch

    # a read-only array (a cached decode) would make torch warn about non-writable memory: copy it then
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None].float().div_(255.0)


class TorchMetric(Metric):
    packages = ("torch",)

    def __init__(self) -> None:
        self._model: Any = None

    def build(self) -> Any:
        raise NotImplementedError

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x, y).item())

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        _check_pair(self.name, output, reference)
        if self.too_small(output):
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
    min_side = 11  # its 11x11 window, applied without padding
    description = "SSIM on luma Y (pyiqa ssim: Y rounded to integers, 11x11 Gaussian window sigma 1.5, no downsampling)"


class MS_SSIM(PyiqaMetric):
    name = "ms_ssim"
    pyiqa_name = "ms_ssim"
    min_side = 161  # 5 scales: an 11 px window after 4 halvings (measured: 160 px raises)
    description = "MS-SSIM on luma Y (pyiqa ms_ssim, 5 scales); see ms_ssim_rgb for the RGB variant"


class MS_SSIM_RGB(TorchMetric):
    name = "ms_ssim_rgb"
    packages = ("torch", "pytorch_msssim")
    min_side = 161  # pytorch_msssim asserts a side above (11 - 1) x 2^4
    description = "MS-SSIM on RGB (pytorch_msssim, data range 255, 5 scales; CompressAI's convention)"

    def build(self) -> Any:
        from pytorch_msssim import ms_ssim

        return ms_ssim

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x * 255.0, y * 255.0, data_range=255.0, size_average=True).item())


class LPIPS(PyiqaMetric):
    name = "lpips"
    pyiqa_name = "lpips"
    min_side = 31  # AlexNet's stride-4 convolution and two 3x3 poolings (measured: 30 px raises)
    higher_better = False
    requires = (w.ALEXNET, w.LPIPS_ALEX)
    description = "LPIPS v0.1 with AlexNet features (pyiqa lpips); lower is better"


class LPIPS_VGG(PyiqaMetric):
    name = "lpips_vgg"
    pyiqa_name = "lpips-vgg"
    min_side = 16  # VGG16's four 2x2 poolings before its last stage (measured: 15 px raises)
    higher_better = False
    requires = (w.VGG16, w.LPIPS_VGG)
    description = "LPIPS v0.1 with VGG16 features (pyiqa lpips-vgg); lower is better"


class DISTS(PyiqaMetric):
    name = "dists"
    pyiqa_name = "dists"
    # min_side 1: its L2 poolings pad, so any size is scored (measured down to 1 px)
    higher_better = False
    requires = (w.VGG16, w.DISTS)
    description = "DISTS (pyiqa dists, VGG16 features); lower is better"


class NIQE(PyiqaMetric):
    name = "niqe"
    pyiqa_name = "niqe"
    min_side = 96  # one 96x96 block (pyiqa niqe; measured: 95 px raises)
    higher_better = False
    requires = (w.NIQE,)
    description = "NIQE, no-reference (pyiqa niqe on Y; the reference is ignored); lower is better"

    def score(self, model: Any, x: Any, y: Any) -> float:
        return float(model(x).item())
