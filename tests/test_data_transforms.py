"""Transforms keep boxes on their objects, scale them exactly, and keep labels/ignore aligned with the boxes."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import coco_annotation, write_coco
from torchvision import tv_tensors
from torchvision.transforms import v2

from retina.data import CocoDetection, eval_transforms, train_transforms
from retina.data.transforms import DetectionTransform, RandomQuarterTurn


def _bright_rectangle(height: int, width: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, dict]:
    """A black image with one white rectangle exactly covering pixels ``box`` (xyxy), and its target."""
    x1, y1, x2, y2 = box
    image = torch.zeros(3, height, width)
    image[:, y1:y2, x1:x2] = 1.0
    target = {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.tensor([3]),
        "ignore": torch.tensor([False]),
        "image_id": 42,
    }
    return image, target


def _bright_extent(image: torch.Tensor) -> list[int]:
    """xyxy of the pixels brighter than half, in the contract's pixel-corner coordinates."""
    ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_flip_moves_the_box_with_the_object():
    image, target = _bright_rectangle(20, 50, (5, 4, 17, 12))
    flipped, out = train_transforms(min_size=20, max_size=None, flip_p=1.0)(image, target)
    assert out["boxes"].tolist() == [[33.0, 4.0, 45.0, 12.0]]  # x -> 50 - x
    assert _bright_extent(flipped) == [33, 4, 45, 12]
    assert out["labels"].tolist() == [3] and out["image_id"] == 42


def test_resize_scales_boxes_exactly_and_keeps_them_on_the_object():
    image, target = _bright_rectangle(40, 60, (10, 8, 30, 24))
    resized, out = eval_transforms(min_size=80, max_size=1000)(image, target)
    assert resized.shape == (3, 80, 120)
    assert out["boxes"].tolist() == [[20.0, 16.0, 60.0, 48.0]]
    assert _bright_extent(resized) == [20, 16, 60, 48]


def test_max_size_caps_the_longer_side():
    image, target = _bright_rectangle(40, 200, (0, 0, 100, 40))
    resized, out = eval_transforms(min_size=80, max_size=300)(image, target)
    assert resized.shape == (3, 60, 300)  # shorter side 80 would make the longer 400 > 300
    assert out["boxes"].tolist() == [[0.0, 0.0, 150.0, 60.0]]
    square, _ = eval_transforms(min_size=256, max_size=256)(torch.zeros(3, 128, 128), target)
    assert square.shape == (3, 256, 256)


def test_multiscale_training_draws_from_the_given_sizes():
    torch.manual_seed(0)
    transform = train_transforms(min_size=(32, 48, 64), max_size=None, flip_p=0.0)
    image, target = _bright_rectangle(16, 24, (4, 4, 12, 12))
    seen = set()
    for _ in range(30):
        out_image, out = transform(image, target)
        short = out_image.shape[-2]
        seen.add(short)
        assert out["boxes"].tolist() == [[4.0 * short / 16, 4.0 * short / 16, 12.0 * short / 16, 12.0 * short / 16]]
    assert seen == {32, 48, 64}


def test_boxes_dropped_by_sanitising_take_labels_and_ignore_with_them():
    image = torch.zeros(3, 100, 100)
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 61.5, 90.0], [0.0, 0.0, 100.0, 100.0]]),
        "labels": torch.tensor([1, 2, 3]),
        "ignore": torch.tensor([False, False, True]),
        "image_id": 7,
    }
    # Halving makes the 1.5 px wide box 0.75 px wide: it goes, and so do its label and ignore flag.
    _, out = eval_transforms(min_size=50, max_size=None)(image, target)
    assert out["boxes"].tolist() == [[5.0, 5.0, 25.0, 25.0], [0.0, 0.0, 50.0, 50.0]]
    assert out["labels"].tolist() == [1, 3]
    assert out["ignore"].tolist() == [False, True]


def test_outputs_are_plain_tensors_of_the_contract():
    image, target = _bright_rectangle(30, 30, (1, 2, 10, 20))
    out_image, out = train_transforms(min_size=30, max_size=None, photometric=True)(image, target)
    assert type(out_image) is torch.Tensor and type(out["boxes"]) is torch.Tensor
    assert out_image.dtype == torch.float32 and out["boxes"].dtype == torch.float32
    assert out["labels"].dtype == torch.int64 and out["ignore"].dtype == torch.bool
    assert 0.0 <= out_image.min() and out_image.max() <= 1.0
    assert out["boxes"].tolist() in ([[1.0, 2.0, 10.0, 20.0]], [[20.0, 2.0, 29.0, 20.0]])


def test_images_without_boxes():
    target = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "ignore": torch.zeros(0, dtype=torch.bool),
        "image_id": 1,
    }
    out_image, out = train_transforms(min_size=64, max_size=None)(torch.rand(3, 32, 48), target)
    assert out_image.shape == (3, 64, 96) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_dataset_applies_transforms(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    image_dir, ann_file = write_coco(
        tmp_path, images, [coco_annotation(1, 1, 1, [4, 3, 10, 6])], [{"id": 1, "name": "x"}]
    )
    image, target = CocoDetection(image_dir, ann_file, transforms=eval_transforms(60, 1000))[0]
    assert image.shape == (3, 60, 80)
    assert target["boxes"].tolist() == [[8.0, 6.0, 28.0, 18.0]]


def test_repr_shows_the_pipeline():
    assert "RandomHorizontalFlip" in repr(train_transforms()) and "ColorJitter" not in repr(train_transforms())
    assert isinstance(eval_transforms(), DetectionTransform)


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_flip_probability_is_honoured(flip_p):
    image, target = _bright_rectangle(10, 10, (0, 0, 2, 10))
    _, out = train_transforms(min_size=10, max_size=None, flip_p=flip_p)(image, target)
    assert out["boxes"][0, 0].item() == (8.0 if flip_p else 0.0)


def test_quarter_turns_move_the_box_with_the_object_and_take_all_four_angles():
    image, target = _bright_rectangle(20, 30, (3, 2, 11, 7))
    transform = train_transforms(min_size=20, max_size=None, flip_p=0.0, rotate90=True)
    turns = set()
    for seed in range(40):
        torch.manual_seed(seed)
        turned, out = transform(image, target)
        k = next(k for k in range(4) if torch.equal(turned, torch.rot90(image, k, dims=(1, 2))))  # exact pixels
        turns.add(k)
        assert out["boxes"].tolist() == [_bright_extent(turned)]
        assert out["labels"].tolist() == [3] and out["ignore"].tolist() == [False]
    assert turns == {0, 1, 2, 3}
    assert "RandomQuarterTurn" not in repr(train_transforms())  # off unless asked for


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_quarter_turn_equals_torchvision_rotation(k, dtype):
    """RandomQuarterTurn at k quarter turns = v2.RandomRotation((90 k, 90 k), expand=True): the same pixels and
    boxes, on a non-square image with boxes that reach its edges."""
    g = torch.Generator().manual_seed(k)
    image = tv_tensors.Image((torch.rand(3, 30, 50, generator=g) * 255).to(dtype))
    xy = torch.rand(6, 2, generator=g) * torch.tensor([40.0, 20.0])
    boxes = torch.cat([xy, (xy + 1 + torch.rand(6, 2, generator=g) * 20).clamp(max=torch.tensor([50.0, 30.0]))], 1)
    boxes[0] = torch.tensor([0.0, 0.0, 50.0, 30.0])  # the whole image
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(30, 50))
    ours = RandomQuarterTurn()
    expected = v2.RandomRotation((90 * k, 90 * k), expand=True)({"image": image, "boxes": boxes})
    got = {"image": ours.transform(image, {"k": k}), "boxes": ours.transform(boxes, {"k": k})}
    assert torch.equal(got["image"], expected["image"]) and type(got["image"]) is tv_tensors.Image
    assert got["boxes"].canvas_size == expected["boxes"].canvas_size
    torch.testing.assert_close(got["boxes"].as_subclass(torch.Tensor), expected["boxes"].as_subclass(torch.Tensor))
