"""Build the LPIPS (VGG) perceptual metric offline.

``lpips.LPIPS`` normally asks torchvision for ImageNet VGG16 weights, which downloads them on first
use. Here the backbone is always built without pretrained weights and then filled from torchvision's
``vgg16-*.pth`` file found on disk (``torch.hub.get_dir()/checkpoints/``, which honours
``TORCH_HOME``, or an explicit path); nothing is ever downloaded. LPIPS's own linear calibration
layers ship inside the ``lpips`` pip package and are loaded from there.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

# torchvision ``vgg16.features`` indices that lpips groups into its five slices.
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def _lin_weights_file() -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"


class LPIPSWeightsMissing(RuntimeError):
    """The VGG16 backbone weights LPIPS needs are not on disk (and are never downloaded)."""


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_vgg16_weights(path: str | os.PathLike | None = None) -> Path | None:
    """Locate torchvision's VGG16 ImageNet weights without downloading anything.

    Args:
        path: an explicit ``.pth`` file, or a directory to search for ``vgg16-*.pth``. When None,
            search ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints`` if set).
    Returns:
        The file, or None when there is none.
    """
    where = Path(path).expanduser() if path is not None else _hub_checkpoints()
    if where.is_file():
        return where
    if where.is_dir():
        found = sorted(where.glob("vgg16-*.pth"))
        return found[0] if found else None
    return None


def missing_message(path: str | os.PathLike | None = None) -> str:
    """The one-paragraph explanation raised as :class:`LPIPSWeightsMissing`."""
    where = Path(path).expanduser() if path is not None else _hub_checkpoints() / "vgg16-*.pth"
    return (
        f"LPIPS needs torchvision's pretrained VGG16 backbone weights, but none were found at {where} "
        "(torch.hub.get_dir() honours TORCH_HOME); lol-dreamer never downloads them during training. "
        "Either train without the perceptual term with `--lpips-weight 0` (MSE only), or pass "
        "`--lpips-weights PATH` pointing at torchvision's vgg16-397923af.pth (on a machine with "
        "network: `python -c \"import torchvision; torchvision.models.vgg16(weights='DEFAULT')\"` puts it "
        "in ~/.cache/torch/hub/checkpoints/)."
    )


def _vgg_to_lpips_keys(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Map torchvision ``features.{i}.{weight,bias}`` keys to lpips ``net.slice{k}.{i}.*`` keys."""
    out = {}
    for k, (lo, hi) in enumerate(_SLICES, start=1):
        for i in range(lo, hi):
            for name in ("weight", "bias"):
                key = f"features.{i}.{name}"
                if key in state:
                    out[f"net.slice{k}.{i}.{name}"] = state[key]
    if len(out) != 26:  # 13 conv layers × (weight, bias)
        raise ValueError(
            f"{source} does not look like torchvision's VGG16 weights (found {len(out)} of 26 "
            "feature tensors); pass the vgg16-*.pth file from torchvision"
        )
    return out


def build_lpips(
    weights_path: str | os.PathLike | None = None, allow_random_backbone: bool = False
) -> nn.Module:
    """An ``lpips.LPIPS(net="vgg")`` module in eval mode with frozen weights, built offline.

    Args:
        weights_path: torchvision VGG16 file (or a directory holding one); None searches the torch
            hub cache.
        allow_random_backbone: for tests of the plumbing only: use a randomly initialised VGG when
            no weights are found instead of raising. Never use this for training.
    Returns:
        The LPIPS module; call it as ``lpips(a, b, normalize=True)`` on ``[n, 3, H, W]`` in [0, 1].
    Raises:
        LPIPSWeightsMissing: no weights found and ``allow_random_backbone`` is False.
    """
    found = find_vgg16_weights(weights_path)
    if found is None and not allow_random_backbone:
        raise LPIPSWeightsMissing(missing_message(weights_path))
    import lpips

    with warnings.catch_warnings(), torch.device("meta"):  # shapes only: no download, no slow init
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for `pretrained=False`
        model = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    model.scaling_layer = lpips.ScalingLayer()  # its constant buffers, rebuilt for real
    # LPIPS's calibration layers ship inside the lpips package.
    lin = torch.load(_lin_weights_file(), map_location="cpu", weights_only=True)
    if found is not None:
        state = torch.load(found, map_location="cpu", weights_only=True)
        backbone = _vgg_to_lpips_keys(state, found)
    else:
        backbone = {}
        for name, p in model.net.named_parameters():
            backbone[f"net.{name}"] = (
                nn.init.kaiming_normal_(torch.empty_like(p)) if p.dim() > 1 else torch.zeros_like(p)
            )
    lin.update(
        {k.replace("lin", "lins.", 1): v for k, v in lin.items()}
    )  # lpips registers both names
    scaling = {f"scaling_layer.{k}": v for k, v in model.scaling_layer.state_dict().items()}
    missing, _ = model.load_state_dict({**lin, **backbone, **scaling}, strict=False)
    if missing:
        raise ValueError(f"LPIPS tensors left unset after loading ({found}): {missing[:4]}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
