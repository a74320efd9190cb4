"""retina.images: the checks on the images a user gives the model, named after what the user did wrong, and the
padding of images of different sizes into one batch."""

from __future__ import annotations

import pytest
import torch

from retina.images import as_image_list, as_image_tensor, pad_images


def test_uint8_image_is_divided_by_255():
    image = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = as_image_tensor(image)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.2, 1.0]))


def test_float64_image_becomes_float32_with_the_same_values():
    image = torch.rand(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = as_image_tensor(image)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, image.float())


def test_user_gave_a_grey_image():
    with pytest.raises(ValueError, match=r"image 2: expected an RGB image of shape \[3, H, W\], got \[1, 8, 8\]"):
        as_image_tensor(torch.rand(1, 8, 8), "image 2")


def test_user_gave_channels_last():
    with pytest.raises(ValueError, match=r"expected an RGB image of shape \[3, H, W\], got \[8, 8, 3\]"):
        as_image_tensor(torch.rand(8, 8, 3))


def test_user_gave_a_numpy_array():
    with pytest.raises(TypeError, match="expected a torch.Tensor .3, H, W., got ndarray"):
        as_image_tensor(torch.rand(3, 8, 8).numpy())


def test_user_gave_an_int64_image():
    with pytest.raises(TypeError, match="expected float values in .0, 1. or uint8, got torch.int64"):
        as_image_tensor(torch.zeros(3, 8, 8, dtype=torch.int64))


@pytest.mark.parametrize("shape", [(3, 0, 64), (3, 64, 0)])
def test_user_gave_an_empty_image(shape):
    images = [torch.rand(3, 32, 32), torch.rand(*shape)]
    with pytest.raises(ValueError, match=rf"image 1: the image is empty, shape \[3, {shape[1]}, {shape[2]}\]"):
        as_image_list(images)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_user_gave_an_image_with_a_non_finite_pixel(bad):
    image = torch.rand(3, 16, 16)
    image[1, 5, 7] = bad
    with pytest.raises(ValueError, match=r"image 1: 1 pixel values are NaN or inf"):
        as_image_list([torch.rand(3, 8, 8), image])


def test_user_gave_0_to_255_floats():
    image = torch.rand(3, 8, 8) * 255
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\], got min .*; for 0..255 values pass a uint8"):
        as_image_tensor(image)


def test_user_gave_a_normalised_image():
    image = (torch.rand(3, 8, 8) - 0.5) / 0.25  # mean/std-normalised: the model normalises itself
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\], got min -"):
        as_image_tensor(image)


def test_float_rounding_just_outside_0_1_is_accepted():
    image = torch.tensor([-1e-6, 0.5, 1 + 1e-6]).view(3, 1, 1)
    assert torch.equal(as_image_tensor(image), image)


def test_user_gave_one_image_instead_of_a_list():
    with pytest.raises(
        ValueError, match=r"got one image tensor of shape \[3, 20, 30\]; expected a list of \[3, H, W\]"
    ):
        as_image_list(torch.rand(3, 20, 30))


def test_user_gave_a_5d_tensor():
    with pytest.raises(ValueError, match=r"got a tensor of shape \[1, 2, 3, 8, 8\]"):
        as_image_list(torch.rand(1, 2, 3, 8, 8))


def test_user_gave_a_path_instead_of_images():
    with pytest.raises(TypeError, match="got str"):
        as_image_list("photo.jpg")


def test_a_batch_and_a_list_give_the_same_images():
    batch = torch.rand(2, 3, 8, 8)
    from_batch, from_list = as_image_list(batch), as_image_list([batch[0], batch[1]])
    assert len(from_batch) == 2 and all(torch.equal(a, b) for a, b in zip(from_batch, from_list, strict=True))
    assert as_image_list([]) == []


def test_pad_images_pads_bottom_right_to_a_multiple_with_the_colour():
    a, b = torch.rand(3, 10, 20), torch.rand(3, 33, 7)
    batch, sizes = pad_images([a, b], 16, colour=(0.1, 0.2, 0.3))
    assert batch.shape == (2, 3, 48, 32) and sizes.tolist() == [[10, 20], [33, 7]]
    assert torch.equal(batch[0, :, :10, :20], a) and torch.equal(batch[1, :, :33, :7], b)
    torch.testing.assert_close(batch[0, :, 10:, :].mean(dim=(1, 2)), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(batch[1, :, :, 7:].amin(dim=(1, 2)), torch.tensor([0.1, 0.2, 0.3]))


def test_pad_images_stacks_images_that_need_no_padding():
    images = [torch.rand(3, 32, 64) for _ in range(3)]
    batch, sizes = pad_images(images, 32)
    assert torch.equal(batch, torch.stack(images)) and sizes.tolist() == [[32, 64]] * 3


def test_pad_images_of_no_images_is_an_error():
    with pytest.raises(ValueError, match="at least one image"):
        pad_images([], 32)
