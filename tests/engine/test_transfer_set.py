"""Transfer sets (``data.unlabeled``) in the engine: where the images come from, how an epoch mixes
them with the labelled ones, and who may use them."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detkd.config import DataSection, SynthSection, UnlabeledSection
from detkd.data.synth import SYNTH_CLASSES
from detkd.data.dataset import DatasetIndex, DetectionDataset
from detkd.data.from_config import build_train_dataset
from detkd.data.records import ImageRecord
from detkd.engine import data as D
from detkd.engine.distributed import init_distributed
from detkd.errors import DetkdError


def mixed(labelled: int, transfer: int) -> DetectionDataset:
    records = [ImageRecord(str(i), f"/x/{i}.png", 8, 8) for i in range(labelled + transfer)]
    return DetectionDataset(DatasetIndex("voc", "/x", "train", ("a",), records), unlabeled_from=labelled)


def epoch(sampler: D.MixedTrainSampler, e: int, start: int = 0) -> list[int]:
    sampler.set_position(e, start)
    return list(sampler)


def test_an_epoch_keeps_the_labelled_length_and_takes_its_share_of_new_transfer_images() -> None:
    sampler = D.MixedTrainSampler(mixed(12, 10), init_distributed("cpu"), seed=3, share=0.25)
    seen = []
    for e in range(4):
        order = epoch(sampler, e)
        assert len(order) == len(sampler) == 12 and len(set(order)) == 12
        transfer = [i for i in order if i >= 12]
        assert len(transfer) == 3  # round(0.25 * 12)
        seen += transfer
    # 12 transfer draws over 4 epochs: the 10 images once each before any is drawn again
    assert set(seen[:10]) == set(range(12, 22)) or Counter(seen)[max(seen, key=seen.count)] <= 2
    assert sorted(Counter(seen).values()) == [1] * 8 + [2] * 2


def test_the_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch() -> None:
    info = init_distributed("cpu")
    a = D.MixedTrainSampler(mixed(12, 10), info, seed=3, share=0.5)
    b = D.MixedTrainSampler(mixed(12, 10), info, seed=3, share=0.5)
    assert epoch(a, 2) == epoch(b, 2) and epoch(a, 1) != epoch(a, 2)
    assert epoch(a, 2, start=5) == epoch(b, 2)[5:]
    assert epoch(D.MixedTrainSampler(mixed(12, 10), info, seed=4, share=0.5), 2) != epoch(a, 2)


def test_a_loader_over_a_mixed_dataset_flags_the_transfer_images(synth_root: Path) -> None:
    data = DataSection(format="voc", root=str(synth_root / "voc"), classes=list(SYNTH_CLASSES), num_workers=0)
    labelled = build_train_dataset(dataclasses.replace(data, train_split="first8"))
    transfer = D.load_unlabeled(dataclasses.replace(data, unlabeled=UnlabeledSection(split="train")), labelled)
    assert len(transfer.records) == 4  # the 12 training images but the 8 labelled ones
    assert all(len(r.boxes) == 0 for r in transfer.records)
    dataset = D.with_transfer_set(labelled, transfer)
    loader = D.build_train_loader(dataset, 4, 0, 0, init_distributed("cpu"), transfer_share=0.5)
    D.start_epoch(loader, 0, 0, 0)
    targets = [t for _, batch in loader for t in batch]
    assert len(targets) == 8
    flagged = [t for t in targets if bool(t["unlabeled"])]
    assert len(flagged) == 4 and all(len(t["boxes"]) == 0 for t in flagged)


def test_synth_images_are_the_generators_next_training_images(tmp_path: Path) -> None:
    synth = SynthSection(images=10, seed=0, profile="easy", cache_dir=str(tmp_path))
    data = DataSection(format="synth", synth=synth, num_workers=0, unlabeled=UnlabeledSection(synth_images=5))
    labelled = build_train_dataset(data)
    transfer = D.load_unlabeled(data, labelled)
    stems = [r.image_id for r in transfer.records]
    assert stems == ["000011", "000012", "000013", "000014", "000016"]  # 1-based stems; 000015 is a test image
    bigger = build_train_dataset(dataclasses.replace(data, synth=dataclasses.replace(synth, images=16)))
    same = {r.image_id: r.file_name for r in bigger.records}
    first = labelled.records[0]
    assert np.array_equal(np.asarray(Image.open(first.file_name)), np.asarray(Image.open(same[first.image_id])))


def test_a_folder_of_images_and_its_errors(tmp_path: Path, synth_root: Path) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / "b.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    data = DataSection(format="voc", root=str(synth_root / "voc"), classes=list(SYNTH_CLASSES), num_workers=0)
    labelled = build_train_dataset(data)
    index = D.load_unlabeled(dataclasses.replace(data, unlabeled=UnlabeledSection(folder=str(folder))), labelled)
    assert [(r.image_id, r.width, r.height) for r in index.records] == [("a", 30, 20), ("b", 30, 20)]
    for section, message in ((UnlabeledSection(folder=str(tmp_path / "none")), "no such folder"),
                             (UnlabeledSection(folder=str(synth_root)), "holds no images"),
                             (UnlabeledSection(synth_images=3), "only for data.format synth"),
                             (UnlabeledSection(split="first8"), "no image outside the labelled split")):
        with pytest.raises(DetkdError, match=message):
            D.load_unlabeled(dataclasses.replace(data, unlabeled=section), labelled)


def test_detkd_train_refuses_a_transfer_set(synth_root: Path, make_config) -> None:
    from detkd.engine.trainer import train

    cfg = make_config(synth_root, "data.unlabeled.split=test", "train.epochs=1")
    with pytest.raises(DetkdError, match="need a teacher"):
        train(cfg)
    assert torch.get_num_threads() == 1
