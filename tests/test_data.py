"""Tests for bench.data: installing from the offline mirror, verification, splits and normalisation."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision import datasets

from bench.data import DATASETS, DataError, load_splits, prepare, resolve_data_dir, resolve_mirror

MNIST_GZ = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def mnist_mirror_copy(mirror_dir: Path, dest: Path, *, with_sums: bool = True) -> Path:
    """A writable copy of the MNIST part of the mirror (skipping the 170 MB CIFAR archive)."""
    dest.mkdir()
    for name in MNIST_GZ + (("SHA256SUMS",) if with_sums else ()):
        shutil.copyfile(mirror_dir / name, dest / name)
    return dest


def fingerprints(*parts: torch.Tensor) -> torch.Tensor:
    """One number per image (random projection), sorted, to compare multisets of images cheaply."""
    proj = torch.randn(parts[0][0].numel(), generator=torch.Generator().manual_seed(0))
    return torch.cat([x.flatten(1) @ proj for x in parts]).double().sort().values


@pytest.fixture(scope="module")
def mnist(mnist_data_dir: Path):
    return load_splits("mnist", mnist_data_dir, val_size=5000, split_seed=0)


def test_install_from_mirror_then_reuse(mirror_dir: Path, tmp_path: Path) -> None:
    assert prepare("mnist", tmp_path, mirror_dir) == f"mirror:{mirror_dir}"
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert (tmp_path / "mnist.sha256.json").is_file()
    # Second time the verified files are used and the mirror is not needed.
    assert prepare("mnist", tmp_path, None) == f"existing:{tmp_path}"
    # Without a manifest, files matching the well-known md5s still count as present.
    (tmp_path / "mnist.sha256.json").unlink()
    assert prepare("mnist", tmp_path, None) == f"existing:{tmp_path}"


def test_mnist_shapes_labels_and_normalisation(mnist) -> None:
    assert (mnist.name, mnist.num_classes, mnist.in_channels, mnist.image_size) == ("mnist", 10, 1, 28)
    assert mnist.train_x.shape == (55000, 1, 28, 28)
    assert mnist.val_x.shape == (5000, 1, 28, 28)
    assert mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert len(mnist.train_y) == 55000 and len(mnist.val_y) == 5000 and len(mnist.test_y) == 10000
    for y in (mnist.train_y, mnist.val_y, mnist.test_y):
        assert y.min() == 0 and y.max() == 9
    assert abs(mnist.train_x.mean().item()) < 0.02
    assert abs(mnist.train_x.std().item() - 1) < 0.02


def test_train_and_val_partition_the_official_training_set(mnist, mnist_data_dir: Path) -> None:
    official = datasets.MNIST(mnist_data_dir, train=True).data.unsqueeze(1).float().div(255)
    official = (official - 0.1307) / 0.3081
    assert torch.allclose(fingerprints(mnist.train_x, mnist.val_x), fingerprints(official), atol=1e-3)


def test_split_depends_only_on_split_seed(mnist, mnist_data_dir: Path) -> None:
    kwargs = dict(val_size=5000, train_subset=64, val_subset=64, test_subset=32)
    same = load_splits("mnist", mnist_data_dir, split_seed=0, **kwargs)
    other = load_splits("mnist", mnist_data_dir, split_seed=1, **kwargs)
    # Subsets are prefixes of the full splits, so they are deterministic.
    assert torch.equal(same.val_x, mnist.val_x[:64]) and torch.equal(same.val_y, mnist.val_y[:64])
    assert torch.equal(same.train_x, mnist.train_x[:64])
    assert torch.equal(same.test_x, mnist.test_x[:32])
    assert not torch.equal(other.val_x, same.val_x)
    assert torch.equal(other.test_x, same.test_x)  # the test set is never shuffled


def test_corrupt_mirror_file_is_refused(mirror_dir: Path, tmp_path: Path) -> None:
    mirror = mnist_mirror_copy(mirror_dir, tmp_path / "mirror")
    flip_byte(mirror / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz") as err:
        prepare("mnist", tmp_path / "data", mirror)
    assert str(mirror) in str(err.value)
    assert not (tmp_path / "data" / "mnist.sha256.json").exists()


def test_mirror_without_sha256sums_is_refused(mirror_dir: Path, tmp_path: Path) -> None:
    mirror = mnist_mirror_copy(mirror_dir, tmp_path / "mirror", with_sums=False)
    with pytest.raises(DataError, match="SHA256SUMS"):
        prepare("mnist", tmp_path / "data", mirror)


def test_mirror_missing_a_file_is_refused(mirror_dir: Path, tmp_path: Path) -> None:
    mirror = mnist_mirror_copy(mirror_dir, tmp_path / "mirror")
    (mirror / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        prepare("mnist", tmp_path / "data", mirror)


def test_corrupt_installed_file_is_detected_then_reinstalled(mirror_dir: Path, tmp_path: Path) -> None:
    prepare("mnist", tmp_path, mirror_dir)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    flip_byte(labels)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*[Dd]elete"):
        load_splits("mnist", tmp_path, mirror_dir, val_size=10, train_subset=1, val_subset=1, test_subset=1)
    # Following the advice in the message works.
    labels.unlink()
    splits = load_splits("mnist", tmp_path, mirror_dir, val_size=10, train_subset=1, val_subset=1, test_subset=1)
    assert splits.source == f"mirror:{mirror_dir}"


@pytest.mark.parametrize("name", DATASETS)
def test_no_data_no_mirror_no_network(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self) -> None:
        raise URLError("no network (test)")

    monkeypatch.setattr(datasets.MNIST, "download", offline)
    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError) as err:
        prepare(name, tmp_path, None)
    message = str(err.value)
    for option in ("--data-dir", "NOPROP_DATA_DIR", "--data-mirror", "NOPROP_DATA_MIRROR"):
        assert option in message


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist.*cifar10"):
        prepare("svhn", tmp_path, None)
    with pytest.raises(DataError, match="svhn"):
        load_splits("svhn", tmp_path, val_size=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(val_size=0),
        dict(val_size=60000),
        dict(val_size=100, train_subset=0),
        dict(val_size=100, val_subset=101),
        dict(val_size=100, test_subset=10001),
    ],
)
def test_bad_split_arguments(kwargs: dict, tmp_path: Path) -> None:
    # Checked before touching any files, so an empty data dir is enough.
    with pytest.raises(DataError):
        load_splits("mnist", tmp_path, **kwargs)


def test_resolve_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPROP_DATA_DIR", raising=False)
    monkeypatch.delenv("NOPROP_DATA_MIRROR", raising=False)
    assert resolve_data_dir(None) == Path("data")
    assert resolve_mirror(None) is None
    monkeypatch.setenv("NOPROP_DATA_DIR", "/env/data")
    monkeypatch.setenv("NOPROP_DATA_MIRROR", "/env/mirror")
    assert resolve_data_dir(None) == Path("/env/data")
    assert resolve_mirror(None) == Path("/env/mirror")
    assert resolve_data_dir("/cli/data") == Path("/cli/data")
    assert resolve_mirror("/cli/mirror") == Path("/cli/mirror")


@pytest.mark.slow
def test_cifar10_from_mirror(mirror_dir: Path, tmp_path: Path) -> None:
    splits = load_splits("cifar10", tmp_path, mirror_dir, val_size=5000)
    assert splits.source == f"mirror:{mirror_dir}"
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    assert splits.train_x.shape == (45000, 3, 32, 32) and splits.val_x.shape == (5000, 3, 32, 32)
    assert splits.test_x.shape == (10000, 3, 32, 32)
    assert splits.test_y.min() == 0 and splits.test_y.max() == 9
    everything = torch.cat([splits.train_x, splits.val_x])
    assert everything.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (everything.std(dim=(0, 2, 3)) - 1).abs().max() < 0.01
    # The repackaged batches fail torchvision's stock md5s; the manifest is what makes them acceptable.
    assert prepare("cifar10", tmp_path, None) == f"existing:{tmp_path}"
