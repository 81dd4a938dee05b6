"""Loaders for training and evaluation, and the transfer set of ``cfg.data.unlabeled``.

The datasets themselves come from :mod:`detkd.data.from_config`. Training data is shuffled by a
:class:`TrainSampler` (a :class:`DistributedSampler`, also for a single process) whose order
depends only on ``(seed, epoch)`` and which can start in the middle of an epoch, so a resumed run
sees exactly the batches the killed run would have seen. Evaluation never augments and shards the
test set over ranks without padding (:class:`ShardSampler`), so that every image is predicted
exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from detkd.config import DataSection
from detkd.data.build import load_index
from detkd.data.dataset import DatasetIndex, DetectionDataset, collate
from detkd.data.from_config import resolve_source
from detkd.data.synth import image_stem, split_of
from detkd.data.transfer import folder_index, synth_extension, without_labels
from detkd.data.transforms import EpochSeededAugment
from detkd.engine.distributed import DistInfo
from detkd.errors import DetkdError


def load_unlabeled(data: DataSection, labelled: DetectionDataset) -> DatasetIndex | None:
    """The transfer set of ``data.unlabeled`` (:mod:`detkd.data.transfer`): its images without
    annotations, none of them in the labelled ``labelled``; None when no source is given."""
    section = data.unlabeled
    if not section.sources():
        return None
    classes, exclude = labelled.classes, [r.file_name for r in labelled.records]
    if section.folder:
        index = folder_index(section.folder, classes)
    elif section.split:
        source = resolve_source(data, classes)
        index = load_index(source.format, source.root, split=section.split, classes=source.classes,
                           class_map=source.class_map)
    else:
        index = synth_transfer_index(data, classes)
    index = without_labels(index, exclude)
    if not index.records:
        raise DetkdError(f"data.unlabeled: the {section.sources()[0]} gives no image outside the labelled split")
    return index


def synth_transfer_index(data: DataSection, classes: Sequence[str]) -> DatasetIndex:
    """The first ``data.unlabeled.synth_images`` training images of the embedded dataset after the
    labelled ones: the same generator (seed, profile), drawn further."""
    if data.format != "synth" or data.root:
        raise DetkdError("data.unlabeled.synth_images: only for data.format synth with data.root empty "
                         "(generated data); give data.unlabeled.folder or .split otherwise")
    first, wanted = data.synth.images, data.unlabeled.synth_images
    total = synth_extension(first, wanted, lambda i: split_of(i) == "train")
    source = resolve_source(replace(data, synth=replace(data.synth, images=total)), classes)
    index = load_index(source.format, source.root, split=data.train_split, classes=source.classes)
    after = {image_stem(i) for i in range(first, total)}
    index.records = [r for r in index.records if r.image_id in after]
    return index


def with_transfer_set(labelled: DetectionDataset, transfer: DatasetIndex) -> DetectionDataset:
    """One dataset: the labelled records, then the transfer set's (flagged ``unlabeled`` in their
    targets), with the labelled one's augmentation."""
    index = DatasetIndex(labelled.index.format, labelled.index.root, labelled.index.split, labelled.classes,
                         [*labelled.records, *transfer.records], labelled.index.report, labelled.index.category_ids)
    return DetectionDataset(index, augment=labelled.augment, unlabeled_from=len(labelled.records))


class TrainSampler(DistributedSampler):
    """A shuffled, padded shard of the dataset per rank, that can start at batch ``k`` of an epoch.

    The order is a function of ``(seed, epoch)`` only (:class:`DistributedSampler`'s), so a
    resumed run skips the batches already trained on and continues with the same ones.
    """

    def __init__(self, dataset: DetectionDataset, info: DistInfo, seed: int) -> None:
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Epoch ``epoch``, from its ``start``-th sample on this rank."""
        self.set_epoch(epoch)
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This rank's samples of the whole epoch."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class MixedTrainSampler(TrainSampler):
    """Epochs of the labelled images' length, a ``share`` of whose samples are transfer images.

    The dataset holds ``labelled`` labelled records, then the transfer set. An epoch takes
    ``round(share * labelled)`` transfer images, the next ones of a seeded permutation of the
    transfer set (a new permutation each time it is used up), and a random subset of the labelled
    images for the rest; so a run with a transfer set takes the same number of steps as without
    one. As :class:`TrainSampler`, the order depends on ``(seed, epoch)`` only.
    """

    def __init__(self, dataset: DetectionDataset, info: DistInfo, seed: int, share: float) -> None:
        super().__init__(dataset, info, seed)
        self.labelled = int(dataset.unlabeled_from)
        self.transfer = len(dataset) - self.labelled
        self.per_epoch = min(self.labelled, max(1, round(share * self.labelled)))
        self.num_samples = -(-self.labelled // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def epoch_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        labelled = torch.randperm(self.labelled, generator=g)[: self.labelled - self.per_epoch]
        order = torch.cat([labelled, self.labelled + self.transfer_positions()])
        order = order[torch.randperm(len(order), generator=g)].tolist()
        order += order[: self.total_size - len(order)]
        return order[self.rank : self.total_size : self.num_replicas]

    def transfer_positions(self) -> torch.Tensor:
        """This epoch's transfer images: positions ``epoch * per_epoch ...`` of the endless sequence
        of seeded permutations of the transfer set."""
        first = self.epoch * self.per_epoch
        cycles = range(first // self.transfer, (first + self.per_epoch - 1) // self.transfer + 1)
        seq = torch.cat([torch.randperm(self.transfer, generator=torch.Generator().manual_seed(self.seed * 7919 + c))
                         for c in cycles])
        start = first - cycles[0] * self.transfer
        return seq[start : start + self.per_epoch]


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` takes images ``r, r + w, r + 2w, ...``: no padding, no duplicates."""

    def __init__(self, size: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, size, info.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_worker(worker_id: int) -> None:
    """Seed python and numpy in a loader worker from its torch seed (itself from the loader's
    generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def one_opencv_thread(num_workers: int) -> None:
    """Keep loader workers to one thread: torch sets its own to 1 in a worker, and OpenCV's pool
    would start one thread per core in every worker, each competing with the training threads.
    Set here, in the parent, before the workers fork: a forked worker that reconfigures OpenCV's
    pool can deadlock on the pool threads it did not inherit."""
    if num_workers > 0:
        import cv2

        cv2.setNumThreads(1)


def build_train_loader(dataset: DetectionDataset, batch_size: int, num_workers: int, seed: int, info: DistInfo,
                       transfer_share: float = 0.5) -> DataLoader:
    """Batches of ``(images, targets)`` lists; call :func:`start_epoch` before iterating. A dataset
    with a transfer set is sampled by :class:`MixedTrainSampler` with ``transfer_share``."""
    if batch_size <= 0:
        raise DetkdError(f"train.batch_size: must be positive, got {batch_size}")
    one_opencv_thread(num_workers)
    sampler = (TrainSampler(dataset, info, seed) if dataset.unlabeled_from is None
               else MixedTrainSampler(dataset, info, seed, transfer_share))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate, worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed),
        pin_memory=info.device.type == "cuda", persistent_workers=False,
    )


def start_epoch(loader: DataLoader, epoch: int, start_batch: int, seed: int) -> None:
    """Position ``loader`` at batch ``start_batch`` of ``epoch``; reseed its worker seeds for the epoch."""
    loader.sampler.set_position(epoch, start_batch * loader.batch_size)
    if isinstance(loader.dataset.augment, EpochSeededAugment):
        loader.dataset.augment.epoch = epoch
    loader.generator.manual_seed(seed * 100_003 + epoch)


def build_eval_loader(dataset: DetectionDataset, num_workers: int, info: DistInfo) -> DataLoader:
    """This rank's shard of ``dataset``, one image a batch (as torchvision's references evaluate)."""
    one_opencv_thread(num_workers)
    return DataLoader(
        dataset, batch_size=1, sampler=ShardSampler(len(dataset), info), num_workers=num_workers,
        collate_fn=collate, worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0),
    )


def batches(loader: DataLoader) -> Iterator:
    """The loader's batches; an error a worker process raised reading the data (a
    :class:`~detkd.errors.DetkdError`: a bad image, a bad annotation) comes back as itself, one
    line naming the file, instead of torch's wrapper with the worker's traceback."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 (re-raised unless it is a worker's detkd error)
            original = worker_error(e)
            if original is None:
                raise
            raise original from None
        yield batch


def worker_error(e: BaseException) -> DetkdError | None:
    """The detkd error inside torch's "Caught X in DataLoader worker process N" message, or None.
    The message ends with the worker's traceback, whose last line is ``module.Class: message``."""
    text = str(e)
    if "in DataLoader worker process" not in text:
        return None
    last = text.rstrip().splitlines()[-1]
    kind, sep, message = last.partition(": ")
    if not sep or not kind.startswith("detkd.errors."):
        return None
    return DetkdError(message)


def iters_per_epoch(loader: DataLoader) -> int:
    """Batches in a whole epoch on each rank, wherever the sampler starts."""
    sampler: TrainSampler = loader.sampler
    return -(-sampler.num_samples // loader.batch_size)
