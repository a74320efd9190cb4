"""Shared fixtures: seeded random generators and random xyxy boxes."""

from __future__ import annotations

import pytest
import torch


def random_boxes(
    n: int,
    image_size: tuple[int, int] = (256, 256),
    min_size: float = 4.0,
    max_size: float = 160.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """`[n, 4]` valid xyxy boxes (x1 < x2, y1 < y2) of side min_size..max_size, corners inside the image."""
    height, width = image_size
    g = generator
    wh = min_size + (max_size - min_size) * torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = torch.minimum(wh, torch.tensor([width, height], dtype=torch.float64))
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (torch.tensor([width, height]) - wh)
    return torch.cat((xy, xy + wh), dim=1).to(dtype)


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded generator per test: every test sees the same random numbers on every run."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def make_boxes(gen):
    """`make_boxes(n, image_size=(256, 256), min_size=4, max_size=160)` -> `[n, 4]` random xyxy boxes."""

    def make(n: int, image_size: tuple[int, int] = (256, 256), **kwargs) -> torch.Tensor:
        return random_boxes(n, image_size, generator=gen, **kwargs)

    return make
