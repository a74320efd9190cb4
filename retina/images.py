"""Images in, one padded batch out: the one place that checks the images given to the model.

What the model takes (torchvision's convention): RGB images as float tensors `[3, H, W]` with values in [0, 1],
in a list (sizes may differ) or stacked into a `[B, 3, H, W]` batch. uint8 images `[3, H, W]` in 0..255 are
converted (divided by 255). Everything else is an error that names the image and says what was given:
    a single image tensor `[3, H, W]` instead of a list      (iterating it would give `[H, W]` slices)
    another channel count, another number of dimensions
    an empty side (H or W = 0)
    NaN or inf pixels                                        (they silently turn every score into NaN)
    float values outside [0, 1]                              (0..255 floats, or an image normalised already)
    an integer dtype other than uint8

`RetinaNet.detect` (via `preprocess`) and `retina.targets.DetectionCollate` both check with `as_image_tensor`,
then stack with `pad_images`: images of different sizes share one batch, padded at the bottom and right to a
multiple of `config.size_divisible` (the coarsest level's stride, so every level's grid covers the whole image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# A float image may overshoot [0, 1] by float rounding (an antialiased resize sums weights that add up to 1 only
# approximately); a mistake (0..255 values, a normalised image) is off by far more.
RANGE_TOLERANCE = 1e-3


def as_image_tensor(image: Tensor, where: str = "image") -> Tensor:
    """Check one image and return it as float32 `[3, H, W]` in [0, 1].

    uint8 images are divided by 255, other floats cast to float32; anything else (see the module docstring) is a
    `TypeError` or `ValueError` whose message starts with `where`.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor [3, H, W], got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{where}: expected an RGB image of shape [3, H, W], got {list(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{where}: the image is empty, shape {list(image.shape)}; H and W must be at least 1")
    if image.dtype == torch.uint8:
        return image.float().div_(255)  # in place on the new float copy: one pass less
    if not image.is_floating_point():
        raise TypeError(f"{where}: expected float values in [0, 1] or uint8, got {image.dtype}")
    low, high = (float(v) for v in torch.aminmax(image))  # one pass; a NaN makes both NaN, an inf one of them
    if not low >= -RANGE_TOLERANCE or not high <= 1 + RANGE_TOLERANCE:  # `not >=`: also true for NaN
        bad = int((~torch.isfinite(image)).sum())
        if bad:
            raise ValueError(f"{where}: {bad} pixel values are NaN or inf (shape {list(image.shape)})")
        hint = "; for 0..255 values pass a uint8 tensor or divide by 255" if high > 1 else ""
        raise ValueError(f"{where}: float values must be in [0, 1], got min {low:g}, max {high:g}{hint}")
    return image.float()  # one dtype for the batch, whatever the first image was


def as_image_list(images: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """Check what a user gives `RetinaNet.detect`: a list (or tuple) of images `[3, H, W]`, or a batch
    `[B, 3, H, W]`. Returns the images as float32 `[3, H, W]` in [0, 1] (`as_image_tensor`), named by index in
    errors. An empty list gives an empty list."""
    if isinstance(images, Tensor):
        if images.ndim == 3:
            raise ValueError(
                f"got one image tensor of shape {list(images.shape)}; expected a list of [3, H, W] float tensors "
                "in [0, 1] (e.g. [image]) or a [B, 3, H, W] batch"
            )
        if images.ndim != 4:
            raise ValueError(
                f"got a tensor of shape {list(images.shape)}; expected a list of [3, H, W] float tensors in [0, 1] "
                "or a [B, 3, H, W] batch"
            )
    elif not isinstance(images, (list, tuple)):
        raise TypeError(
            f"expected a list of [3, H, W] image tensors or a [B, 3, H, W] batch, got {type(images).__name__}"
        )
    return [as_image_tensor(image, f"image {i}") for i, image in enumerate(images)]


def pad_images(
    images: list[Tensor], size_divisible: int, colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> tuple[Tensor, Tensor]:
    """Stack images `[3, H_i, W_i]` of different sizes into `[B, 3, H, W]`, padded at the bottom and right to a
    multiple of `size_divisible` with `colour` (black by default). Returns the batch and the `[B, 2]`
    (height, width) of each image."""
    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = torch.tensor([img.shape[-2:] for img in images], dtype=torch.long)  # [B, 2]
    height, width = (-(-sizes.max(dim=0).values // size_divisible) * size_divisible).tolist()
    if all(tuple(img.shape[-2:]) == (height, width) for img in images):  # nothing to pad (a 256 px shapes batch)
        return torch.stack(images), sizes
    batch = images[0].new_tensor(colour)[None, :, None, None].repeat(len(images), 1, height, width)
    for img, canvas in zip(images, batch, strict=True):
        canvas[:, : img.shape[1], : img.shape[2]].copy_(img)
    return batch, sizes
