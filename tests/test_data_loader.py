"""The training loader's batches: aspect grouping keeps every batch it can, and an image too thin to resize is named."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import write_coco

from retina.data import DatasetError, coco_dataset
from retina.data.loader import EpochBatches, check_resizable, train_loader


def test_aspect_grouping_of_8_landscape_images_in_batches_of_4_keeps_both_batches():
    batches = EpochBatches(list(range(8)), batch_size=4, seed=0, landscape=[True] * 8)
    assert len(batches) == 2
    assert sorted(i for batch in batches for i, _ in batch) == list(range(8))


def test_aspect_grouping_gives_every_process_the_same_number_of_batches():
    # 7 landscape and 9 portrait images over 2 processes of 2-image batches: each groups its own 8 images
    landscape = [i % 2 == 0 and i < 14 for i in range(16)]
    ranks = [EpochBatches(list(range(16)), 2, seed=1, rank=r, world_size=2, landscape=landscape) for r in range(2)]
    for epoch in range(5):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        counts = [len(list(sampler)) for sampler in ranks]
        assert counts[0] == counts[1] == len(ranks[0]) >= 3, (epoch, counts)
        for batch in (b for sampler in ranks for b in sampler):
            assert len({landscape[i] for i, _ in batch}) == 1  # one orientation per batch


def test_training_image_too_thin_to_resize_is_named(tmp_path):
    images = [
        {"id": 1, "file_name": "fine.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "sliver.jpg", "width": 5000, "height": 1},
    ]
    write_coco(tmp_path, images, [], [{"id": 1, "name": "thing"}])
    dataset = coco_dataset(tmp_path, "train")
    check_resizable(dataset, (256,), None)  # without a cap on the long side it grows to 256 x 1280000
    with pytest.raises(DatasetError, match=r"image .*sliver\.jpg is 5000x1 \(w x h\).*0\.05 px thin"):
        check_resizable(dataset, (256,), 256)


class _OneCorruptImage:
    """Four samples; the third is a corrupt file, as a dataset reports it."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise DatasetError("data/images/2.jpg: cannot decode the image (truncated file)")
        return torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4)}


def unchanged(image, target):
    return image, target


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_training_image_read_by_a_worker_is_reported_as_itself(workers):
    loader, _ = train_loader(_OneCorruptImage(), unchanged, collate_fn=len, batch_size=2, seed=0, num_workers=workers)
    with pytest.raises(DatasetError) as error:
        list(loader)
    # not torch's "Caught DatasetError in DataLoader worker process 0 ... Original Traceback": the message alone
    assert str(error.value) == "data/images/2.jpg: cannot decode the image (truncated file)"
