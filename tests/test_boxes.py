"""retina.boxes against torchvision.ops and torchvision's BoxCoder."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.models.detection._utils import BoxCoder
from torchvision.transforms.v2 import functional as TF

from retina.boxes import (
    BOX_FORMATS,
    DEFAULT_BOX_CLIP,
    box_area,
    box_convert,
    box_giou,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    turn_boxes,
)
from retina.config import RetinaConfig

EXACT = {"rtol": 0.0, "atol": 0.0}


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.product(BOX_FORMATS, BOX_FORMATS)))
def test_box_convert_equals_torchvision(make_boxes, in_fmt, out_fmt):
    xyxy = make_boxes(64)
    boxes = torchvision.ops.box_convert(xyxy, "xyxy", in_fmt)  # valid input in in_fmt
    expected = torchvision.ops.box_convert(boxes, in_fmt, out_fmt)
    torch.testing.assert_close(box_convert(boxes, in_fmt, out_fmt), expected, rtol=1e-6, atol=1e-5)
    # leading dimensions broadcast: [2, 32, 4] in, [2, 32, 4] out, row for row
    batched = box_convert(boxes.reshape(2, 32, 4), in_fmt, out_fmt)
    assert batched.shape == (2, 32, 4)
    torch.testing.assert_close(batched.reshape(64, 4), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("via", ["xywh", "cxcywh"])
def test_box_convert_round_trip(make_boxes, via):
    xyxy = make_boxes(100).double()
    there = box_convert(xyxy, "xyxy", via)
    assert not torch.allclose(there, xyxy)  # the conversion did something
    torch.testing.assert_close(box_convert(there, via, "xyxy"), xyxy, rtol=0, atol=1e-9)
    # and the other way round, starting in `via`
    other = "cxcywh" if via == "xywh" else "xywh"
    start = box_convert(xyxy, "xyxy", other)
    torch.testing.assert_close(box_convert(box_convert(start, other, via), via, other), start, rtol=0, atol=1e-9)


def test_box_convert_known_values():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20.0, 40.0, 60.0]]))
    torch.testing.assert_close(box_convert(xyxy, "xyxy", "cxcywh"), torch.tensor([[30.0, 50.0, 40.0, 60.0]]))


def test_box_convert_same_format_is_a_copy(make_boxes):
    boxes = make_boxes(5)
    out = box_convert(boxes, "xyxy", "xyxy")
    torch.testing.assert_close(out, boxes, **EXACT)
    out[0, 0] = -1.0
    assert boxes[0, 0] != -1.0


def test_box_convert_unknown_format():
    with pytest.raises(ValueError, match="unknown box format 'xyhw'"):
        box_convert(torch.zeros(1, 4), "xyxy", "xyhw")


# ---------------------------------------------------------------- area and IoU


def test_box_area_equals_torchvision(make_boxes):
    boxes = make_boxes(50)
    torch.testing.assert_close(box_area(boxes), torchvision.ops.box_area(boxes), **EXACT)
    assert box_area(boxes.reshape(5, 10, 4)).shape == (5, 10)
    torch.testing.assert_close(box_area(torch.tensor([[1.0, 2.0, 4.0, 7.0]])), torch.tensor([15.0]))


def test_box_iou_equals_torchvision(make_boxes):
    a, b = make_boxes(40), make_boxes(70)
    expected = torchvision.ops.box_iou(a, b)
    assert (expected > 0).float().mean() > 0.2  # the random boxes really overlap
    torch.testing.assert_close(box_iou(a, b), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(box_iou(a, a).diagonal(), torch.ones(40))


def test_box_iou_batched_equals_per_image_loop(make_boxes):
    gt = make_boxes(3 * 6).reshape(3, 6, 4)  # [B, G, 4]
    anchors = make_boxes(50)  # [N, 4] shared by the batch
    out = box_iou(gt, anchors)
    assert out.shape == (3, 6, 50)
    expected = torch.stack([torchvision.ops.box_iou(g, anchors) for g in gt])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    # both sides batched: [B, G, 4] x [B, N, 4] -> [B, G, N]
    other = make_boxes(3 * 9).reshape(3, 9, 4)
    expected = torch.stack([torchvision.ops.box_iou(g, o) for g, o in zip(gt, other, strict=True)])
    torch.testing.assert_close(box_iou(gt, other), expected, rtol=1e-6, atol=1e-7)


def test_box_iou_degenerate_boxes_are_zero_not_nan():
    normal = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    degenerate = torch.tensor(
        [
            [5.0, 5.0, 5.0, 8.0],  # zero width inside the first box
            [2.0, 3.0, 9.0, 3.0],  # zero height
            [4.0, 4.0, 4.0, 4.0],  # a point
        ]
    )
    iou = box_iou(degenerate, torch.cat((normal, degenerate)))
    assert torch.isfinite(iou).all()
    torch.testing.assert_close(iou, torch.zeros(3, 5), **EXACT)
    # torchvision agrees where it is defined and gives NaN where the union is empty
    tv = torchvision.ops.box_iou(degenerate, degenerate)
    assert torch.isnan(tv).all()
    torch.testing.assert_close(box_iou(degenerate, normal), torchvision.ops.box_iou(degenerate, normal))


def test_box_iou_known_value():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[50.0 / 150.0, 0.0]]))


def test_box_giou_equals_torchvision_diagonal(make_boxes, gen):
    a = make_boxes(60, max_size=80.0)
    b = make_boxes(60, max_size=80.0)
    b[:10] = a[:10] + torch.rand(10, 4, generator=gen)  # a few near-identical pairs
    expected = torchvision.ops.generalized_box_iou(a, b).diagonal()
    assert (expected < 0).any() and (expected > 0.5).any()  # disjoint pairs and good overlaps
    out = box_giou(a, b)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert (out > -1).all() and (out <= 1).all()
    torch.testing.assert_close(box_giou(a, a), torch.ones(60))
    # leading dims
    torch.testing.assert_close(box_giou(a.reshape(6, 10, 4), b.reshape(6, 10, 4)), expected.reshape(6, 10))


def test_box_giou_known_value():
    a = torch.tensor([0.0, 0.0, 10.0, 10.0])
    b = torch.tensor([20.0, 0.0, 30.0, 10.0])  # disjoint: IoU 0, enclosing 30x10, union 200
    torch.testing.assert_close(box_giou(a, b), torch.tensor(0.0 - 100.0 / 300.0))


# ---------------------------------------------------------------- deltas


def _anchor_box_pairs(make_boxes, gen, n=200):
    anchors = make_boxes(n, image_size=(512, 640), min_size=8.0, max_size=300.0)
    # boxes near their anchors, as matched pairs are
    boxes = anchors + 0.3 * (anchors[:, 2:] - anchors[:, :2]).repeat(1, 2) * (torch.rand(n, 4, generator=gen) - 0.5)
    return boxes, anchors


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0)])
def test_encode_equals_boxcoder(make_boxes, gen, weights):
    boxes, anchors = _anchor_box_pairs(make_boxes, gen)
    expected = BoxCoder(weights).encode_single(boxes, anchors)
    out = encode_boxes(boxes, anchors, weights)
    assert out.abs().max() > 0.01  # not trivially zero
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # broadcasting: [B, N, 4] boxes against [N, 4] anchors
    batched = encode_boxes(torch.stack((boxes, boxes.flip(0))), anchors, weights)
    torch.testing.assert_close(batched[0], expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batched[1], BoxCoder(weights).encode_single(boxes.flip(0), anchors))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_equals_boxcoder(make_boxes, gen, weights):
    anchors = make_boxes(200, image_size=(512, 640), min_size=8.0, max_size=300.0)
    deltas = torch.randn(200, 4, generator=gen) * torch.tensor(weights) * 0.5
    expected = BoxCoder(weights).decode_single(deltas, anchors)
    torch.testing.assert_close(decode_boxes(deltas, anchors, weights), expected, rtol=1e-6, atol=1e-4)
    batched = decode_boxes(deltas.reshape(2, 100, 4), anchors.reshape(2, 100, 4), weights)
    torch.testing.assert_close(batched.reshape(200, 4), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_inverts_encode(make_boxes, gen, weights):
    boxes, anchors = _anchor_box_pairs(make_boxes, gen)
    boxes, anchors = boxes.double(), anchors.double()
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes, anchors, weights), anchors, weights), boxes)
    # and encode(decode(d)) == d for deltas inside the clamp
    deltas = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(encode_boxes(decode_boxes(deltas, anchors, weights), anchors, weights), deltas)


def test_decode_clamps_huge_deltas_like_boxcoder():
    assert DEFAULT_BOX_CLIP == pytest.approx(math.log(1000.0 / 16))
    assert RetinaConfig().box_clip == pytest.approx(DEFAULT_BOX_CLIP)
    anchors = torch.tensor([[0.0, 0.0, 32.0, 16.0], [100.0, 50.0, 164.0, 178.0]])
    deltas = torch.tensor([[0.5, -0.5, 50.0, 1000.0], [0.0, 0.0, 1e4, -3.0]])
    out = decode_boxes(deltas, anchors)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, anchors), **EXACT)
    # dw, dh above the clip decode as the clip itself: width at most 1000/16 times the anchor's
    widths = out[:, 2] - out[:, 0]
    torch.testing.assert_close(widths, torch.tensor([32.0, 64.0]) * 1000 / 16)
    clipped = deltas.clone()
    clipped[0, 2:] = DEFAULT_BOX_CLIP
    clipped[1, 2] = DEFAULT_BOX_CLIP
    torch.testing.assert_close(out, decode_boxes(clipped, anchors), **EXACT)
    # a smaller clip is honoured too
    small = decode_boxes(deltas, anchors, clip=1.0)
    torch.testing.assert_close(small[0, 2] - small[0, 0], torch.tensor(32.0 * math.e))


# ---------------------------------------------------------------- clipping


def test_clip_boxes_equals_torchvision(make_boxes, gen):
    boxes = make_boxes(100, image_size=(300, 400)) * 1.6 - 80  # many boxes cross the borders
    expected = torchvision.ops.clip_boxes_to_image(boxes, (240, 320))
    assert not torch.equal(expected, boxes)
    torch.testing.assert_close(clip_boxes(boxes, (240, 320)), expected, **EXACT)
    # a tensor of per-image sizes [B, 1, 2] broadcasts against boxes [B, N, 4]
    sizes = torch.tensor([[240, 320], [100, 50], [320, 240]])
    batch = boxes[:99].reshape(3, 33, 4)
    out = clip_boxes(batch, sizes[:, None, :])
    expected = torch.stack(
        [torchvision.ops.clip_boxes_to_image(b, tuple(s.tolist())) for b, s in zip(batch, sizes, strict=True)]
    )
    torch.testing.assert_close(out, expected, **EXACT)


@pytest.mark.parametrize("k", [-1, 0, 1, 2, 3, 5])
def test_turn_boxes_equals_torchvision_rotation(k):
    """k quarter turns of a 30 x 50 image (torchvision: rotate by 90 k degrees counter-clockwise, expand=True),
    for boxes inside, on the edges of and past the image (no clamping)."""
    g = torch.Generator().manual_seed(k % 4)
    xy = torch.rand(20, 2, generator=g) * 60 - 5
    boxes = torch.cat([xy, xy + 1 + torch.rand(20, 2, generator=g) * 20], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, 50.0, 30.0])
    expected = TF.rotate(
        tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(30, 50), clamping_mode=None), 90 * k, expand=True
    )
    torch.testing.assert_close(turn_boxes(boxes, k, (30, 50)), expected.as_subclass(torch.Tensor), atol=1e-4, rtol=0)
    assert expected.canvas_size == ((30, 50) if k % 2 == 0 else (50, 30))
