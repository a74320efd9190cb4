"""The training set as the training loop reads it: seeded samples, the batches of each epoch, the DataLoader.

Taught in notebooks/05_training.ipynb. The data a step sees depends on nothing but (seed, epoch, step): each
epoch's order is a permutation seeded with seed + epoch (DistributedSampler's, so W processes together draw the
global batch one process would), and each sample is augmented under its own RNG seed, seed + epoch * N + index.
The number of workers or processes, and resuming mid-epoch, change nothing. The collate_fn (anchor matching,
`retina.targets.DetectionCollate`) runs in the loader's worker processes, when there are any.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .common import DatasetError


class TrainSamples(Dataset):
    """The training set as the loader reads it: key `(index, seed)` -> image `index`, augmented under RNG seed `seed`.

    Seeding every sample makes its augmentation a function of the key alone: the same whichever worker or process
    reads it, and after a resume. With `preload`, every image is decoded once and kept as uint8 (a 256 px image
    takes 192 KB); the collate_fn turns uint8 back into [0, 1] floats.
    """

    def __init__(self, dataset: Dataset, transforms, preload: bool = False):
        self.dataset, self.transforms = dataset, transforms
        self.cache = None
        if preload:
            self.cache = []
            for i in range(len(dataset)):
                self.cache.append(self._compact(*dataset[i]))
                if i % 256 == 255:  # trim as we go: 8000 images would leave 16 GB of freed buffers behind
                    release_freed_memory()
            release_freed_memory()

    @staticmethod
    def _compact(image: Tensor, target: dict) -> tuple[Tensor, dict]:
        return (image * 255).round().to(torch.uint8), target

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, dict]:
        index, seed = key
        image, target = self.cache[index] if self.cache is not None else self.dataset[index]
        with torch.random.fork_rng(devices=[]):  # leave the process's own RNG stream untouched
            # the CPU generator only: torch.manual_seed also queues a seed for every GPU (0.1 ms a sample)
            torch.default_generator.manual_seed(seed)
            return self.transforms(image, target)


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc only). Preloading decodes every image as float and keeps it
    as uint8; the freed float buffers stay behind as heap fragments, 2 MB per 256 px image instead of 0.2."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class EpochBatches(Sampler):
    """One process's batches of one epoch, as lists of `(index, seed)` keys for `TrainSamples`.

    The order is DistributedSampler's: a permutation seeded with seed + epoch, the same on every process, of which
    process r takes the images r, r + W, r + 2W, ... So the W processes' batches number k together hold images
    [k * B, (k + 1) * B) of the permutation: exactly the global batch one process would draw. The incomplete last
    batch is dropped. `set_epoch(epoch, skip)` restarts the order of `epoch` after its first `skip` batches: a
    resume mid-epoch. With `landscape` (one bool per image), batches hold one orientation only; every process
    keeps as many batches as the process that groups the fewest (all must make the same number of steps).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        landscape: list[bool] | None = None,
    ):
        # every process's share of the order: with aspect grouping, each must know how many batches the others make
        self.shares = [DistributedSampler(dataset, world_size, r, shuffle=True, seed=seed) for r in range(world_size)]
        self.order = self.shares[rank]
        self.batch_size, self.seed, self.num_images, self.landscape = batch_size, seed, len(dataset), landscape
        self.epoch = self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        for share in self.shares:
            share.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def batches(self) -> list[list[int]]:
        """Every batch of the current epoch, as dataset indices."""
        indices, size = list(self.order), self.batch_size
        if self.landscape is None:
            return [indices[k : k + size] for k in range(0, len(indices) - size + 1, size)]
        steps = min(len(self._grouped(list(share))) for share in self.shares)
        return self._grouped(indices)[:steps]

    def _grouped(self, indices: list[int]) -> list[list[int]]:
        """`indices` in batches of one orientation, in the order each batch fills up; the rest is dropped."""
        buckets, batches = {False: [], True: []}, []
        for i in indices:
            bucket = buckets[self.landscape[i]]
            bucket.append(i)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        return batches

    def __len__(self) -> int:
        return len(self.batches()) - self.skip

    def __iter__(self):
        offset = self.seed + self.epoch * self.num_images
        for batch in self.batches()[self.skip :]:
            yield [(i, offset + i) for i in batch]


def check_resizable(dataset: Dataset, min_sizes: Sequence[int], max_size: int | None) -> None:
    """Raise DatasetError naming the first image of `dataset` that the training resize (short side to one of
    `min_sizes`, long side at most `max_size`) would make less than one pixel thin, e.g. a 1 x 5000 image at
    256 / 256 px. Reads the sizes from the annotations (`dataset.image_size`), before training starts."""
    smallest = min(min_sizes)
    for index in range(len(dataset)):
        height, width = dataset.image_size(index)
        short, long = min(height, width), max(height, width)
        scale = smallest / short if max_size is None else min(smallest / short, max_size / long)
        if int(short * scale) < 1:  # torchvision's Resize rounds down, and fails on a size of 0
            raise DatasetError(
                f"image {dataset.image_path(index)} is {width}x{height} (w x h): resized to a short side of "
                f"{smallest} px with the long side at most {max_size} px it would be {short * scale:.2f} px thin; "
                "remove it from the training set (or crop it)"
            )


class _ErrorsAsSamples(Dataset):
    """`dataset` whose DatasetError (a missing or corrupt image) is returned as the sample instead of raised."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except DatasetError as error:
            return error


class _PassErrors:
    """A collate_fn that hands a sample's DatasetError on as the batch, else collates with `collate_fn`."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, samples: list):
        errors = [sample for sample in samples if isinstance(sample, DatasetError)]
        return errors[0] if errors else self.collate_fn(samples)


class IntactErrorsLoader(DataLoader):
    """A DataLoader that raises a sample's DatasetError as it is, also when a worker process read the sample.

    Raised in a worker, torch re-raises the error in the main process as a new one whose message is the worker's
    whole traceback ("Caught DatasetError in DataLoader worker process 0 ... Original Traceback ..."), the useful
    line last. Here the worker returns the error as its sample, the collate_fn passes it on as the batch, and the
    iterator raises it: the user reads the file and the problem, nothing else.
    """

    def __init__(self, dataset: Dataset, collate_fn, **kwargs):
        super().__init__(_ErrorsAsSamples(dataset), collate_fn=_PassErrors(collate_fn), **kwargs)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, DatasetError):
                raise batch
            yield batch


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker_init_fn: Ctrl-C is for the training process, which stops cleanly; a worker killed by it
    would take the batch in flight with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_loader(
    dataset: Dataset,
    transforms,
    collate_fn,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    preload: bool = False,
    aspect_grouping: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochBatches]:
    """The DataLoader of one process and its sampler (`set_epoch` before each epoch); `batch_size` per process.

    `preload` decodes every image once (`TrainSamples`); `aspect_grouping` batches landscape images with
    landscape ones and portrait with portrait (`dataset.image_size(i)` gives each image's (height, width)).
    """
    samples = TrainSamples(dataset, transforms, preload=preload)
    landscape = None
    if aspect_grouping:
        landscape = [w > h for h, w in map(dataset.image_size, range(len(dataset)))]
    batches = EpochBatches(dataset, batch_size, seed, rank, world_size, landscape)
    loader = IntactErrorsLoader(
        samples,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Not persistent: each epoch's workers end with its loop, also when a time budget or Ctrl-C breaks it off.
        # Persistent workers outlive train() inside the DataLoader, and a second run in the same process (a
        # notebook's resume) forks its workers while the first run's are still referenced.
        persistent_workers=False,
        worker_init_fn=ignore_sigint,
    )
    return loader, batches
