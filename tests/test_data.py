"""Dataset loaders, subsets, augmentation and batching, on files the generator writes."""

from __future__ import annotations

import gc
import hashlib
import tarfile
import warnings

import numpy as np
import pytest
import torch

from onlinenorm.training.data import (
    BatchLoader,
    DatasetError,
    Split,
    cifar,
    download,
    imagefolder,
    load_dataset,
    write_synthetic,
)
from onlinenorm.training.data.augment import pad_crop_flip, resized_crop_flip
from onlinenorm.training.data.subset import stratified_subset
from onlinenorm.training.data.synth import synthesize

TRAIN, TEST = 60, 20


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One small synthetic dataset per format: {format: data_dir}."""
    root = tmp_path_factory.mktemp("data")
    formats = {"cifar10": {}, "cifar100": {}, "imagenet-npz": {"num_classes": 6}, "imagefolder": {"num_classes": 4}}
    for fmt, options in formats.items():
        write_synthetic(fmt, root / fmt, num_train=TRAIN, num_test=TEST, seed=1, **options)
    return {fmt: root / fmt for fmt in formats}


@pytest.mark.parametrize("fmt,classes", [("cifar10", 10), ("cifar100", 100), ("imagenet-npz", 6)])
def test_round_trip_is_exact(folders, fmt, classes):
    train, test = synthesize(classes, TRAIN, TEST, 32, seed=1)
    data = load_dataset(fmt, folders[fmt])
    assert data.num_classes == (1000 if fmt == "imagenet-npz" else classes)
    np.testing.assert_array_equal(data.train.images, train.images)
    np.testing.assert_array_equal(data.train.labels, train.labels)
    np.testing.assert_array_equal(data.val.images, test.images)
    np.testing.assert_array_equal(data.val.labels, test.labels)


def test_cifar_accepts_the_batches_folder_itself(folders):
    data = load_dataset("cifar10", folders["cifar10"] / "cifar-10-batches-py")
    assert len(data.train) == TRAIN and data.class_names[0] == "class_000"


def test_npz_class_subset_and_cap(folders):
    data = load_dataset("imagenet-npz", folders["imagenet-npz"], classes=3, max_per_class=4)
    assert data.class_names == ["1", "2", "3"]
    assert np.bincount(data.train.labels).tolist() == [4, 4, 4]  # the cap spans both train files
    assert set(data.val.labels.tolist()) <= {0, 1, 2}
    listed = load_dataset("imagenet-npz", folders["imagenet-npz"], classes=[5, 2])
    assert listed.class_names == ["5", "2"] and set(listed.train.labels.tolist()) == {0, 1}


def test_imagefolder_decodes_classes_and_caps(folders, tmp_path):
    data = load_dataset("imagefolder", folders["imagefolder"], image_size=24, cache_dir=tmp_path)
    assert data.image_shape == (3, 24, 24) and data.num_classes == 4
    assert len(data.train) == TRAIN and len(data.val) == TEST
    first = load_dataset(
        "imagefolder", folders["imagefolder"], image_size=24, classes=2, max_per_class=5, cache_dir=tmp_path
    )
    assert first.class_names == data.class_names[:2]
    assert np.bincount(first.train.labels).tolist() == [5, 5]
    with pytest.raises(DatasetError, match="nope"):
        load_dataset("imagefolder", folders["imagefolder"], classes=["nope"], cache_dir=tmp_path)


def test_imagefolder_cache_is_built_once_and_reused(folders, tmp_path, monkeypatch):
    first = load_dataset("imagefolder", folders["imagefolder"], image_size=16, cache_dir=tmp_path)
    cached = sorted(tmp_path.glob("*.npy"))
    assert len(cached) == 2  # train and val images
    stamps = [p.stat().st_mtime_ns for p in cached]

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(imagefolder, "_decode", no_decoding)
    second = load_dataset("imagefolder", folders["imagefolder"], image_size=16, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert isinstance(second.train.images, np.memmap)
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*.npy"))] == stamps
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache
        load_dataset("imagefolder", folders["imagefolder"], image_size=20, cache_dir=tmp_path)


def test_imagefolder_default_cache_lives_next_to_the_data(folders):
    load_dataset("imagefolder", folders["imagefolder"], image_size=8, classes=1)
    assert list((folders["imagefolder"] / imagefolder.CACHE_FOLDER).glob("train-8px-*.images.npy"))


def _copy_tree(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_corrupt_jpeg_is_named(folders, tmp_path):
    root = _copy_tree(folders["imagefolder"], tmp_path / "tree")
    victim = sorted((root / "train").rglob("*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DatasetError, match=victim.name):
        load_dataset("imagefolder", root, image_size=8, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "code", "shape", "labels"])
def test_corrupt_cifar_file_is_named(folders, tmp_path, damage):
    root = _copy_tree(folders["cifar10"], tmp_path / "c10")
    victim = root / "cifar-10-batches-py" / "data_batch_3"
    entry = cifar.read_pickle(victim)
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "garbage":
        victim.write_bytes(b"not a pickle at all")
    elif damage == "code":  # a pickle that would run a command when loaded unsafely
        victim.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    elif damage == "shape":
        cifar.write_pickle(victim, {**entry, "data": entry["data"][:, :100]})
    else:
        cifar.write_pickle(victim, {**entry, "labels": [10] * len(entry["labels"])})
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", root)


def test_corrupt_npz_is_named(folders, tmp_path):
    root = _copy_tree(folders["imagenet-npz"], tmp_path / "npz")
    (root / "val_data.npz").write_bytes((root / "val_data.npz").read_bytes()[:200])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(DatasetError, match="val_data.npz") as raised:
            load_dataset("imagenet-npz", root)
        del raised  # its traceback holds the reader's frames
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []  # the damaged file was closed


@pytest.mark.parametrize("name", ["cifar10", "imagefolder", "imagenet-npz"])
def test_missing_folder_says_what_to_do(tmp_path, name):
    with pytest.raises(DatasetError, match="onlinenorm data synth"):
        load_dataset(name, tmp_path / "absent")


def test_download_verifies_checksum_and_extracts(folders, tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folders["cifar10"] / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(archive.as_uri(), "0" * 32))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("cifar10", tmp_path / "fetched", download=True)
    assert not (tmp_path / "fetched" / "cifar-10-batches-py").exists()
    monkeypatch.setitem(download.ARCHIVES, "cifar10", download.Archive(archive.as_uri(), md5))
    data = load_dataset("cifar10", tmp_path / "fetched", download=True)
    assert len(data.train) == TRAIN
    # A second node sharing the folder finishes later: its copy is dropped, nothing is left behind.
    download.download_archive("cifar10", tmp_path / "fetched")
    assert [p.name for p in (tmp_path / "fetched").iterdir()] == ["cifar-10-batches-py"]
    assert len(load_dataset("cifar10", tmp_path / "fetched").train) == TRAIN


def test_stratified_subset_is_per_class_and_seeded():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    half = stratified_subset(labels, 0.5, seed=3)
    assert np.bincount(labels[half]).tolist() == [5, 10, 15, 20]
    assert np.bincount(labels[stratified_subset(labels, 12, seed=3)]).tolist() == [10, 12, 12, 12]
    np.testing.assert_array_equal(half, stratified_subset(labels, 0.5, seed=3))
    assert not np.array_equal(half, stratified_subset(labels, 0.5, seed=4))


def test_dataset_subset_and_stats(folders):
    data = load_dataset("cifar10", folders["cifar10"], subset=3)
    assert np.bincount(data.train.labels).tolist() == [3] * 10
    assert len(data.val) == TEST  # validation is never subset
    pixels = data.train.images.astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)


def test_pad_crop_flip_matches_a_per_sample_reference():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = pad_crop_flip(images, torch.Generator().manual_seed(0), padding=2)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    generator = torch.Generator().manual_seed(0)  # replay the same draws
    dy = torch.randint(0, 5, (16, 1), generator=generator)
    dx = torch.randint(0, 5, (16, 1), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        window = padded[i, :, dy[i, 0] : dy[i, 0] + 8, dx[i, 0] : dx[i, 0] + 8]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window)


def test_resized_crop_flip_keeps_shape_and_range():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = resized_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, resized_crop_flip(images, torch.Generator().manual_seed(0)))


def test_loader_visits_every_sample_once_and_normalizes():
    split = Split(np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2), np.arange(10))
    loader = BatchLoader(split, 4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5), shuffle=True, seed=0)
    assert len(loader) == 3
    batches = list(loader)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    x, y = batches[0]
    expected = (
        torch.from_numpy(split.images[y.numpy()]).float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    ) / 0.5
    torch.testing.assert_close(x, expected)
    dropping = BatchLoader(split, 4, mean=(0,) * 3, std=(1,) * 3, shuffle=True, drop_last=True)
    assert len(dropping) == 2 and sum(len(y) for _, y in dropping) == 8


def test_loader_epochs_are_reproducible_and_distinct():
    split = Split(np.zeros((32, 3, 4, 4), np.uint8), np.arange(32))
    loader = BatchLoader(split, 8, mean=(0,) * 3, std=(1,) * 3, shuffle=True, seed=5)

    def order(epoch):
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    assert order(1) == order(1) and order(1) != order(2)
