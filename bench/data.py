"""Dataset preparation and loading for MNIST and CIFAR-10.

The benchmark runs on machines without internet, so the raw files can come from three places, in this
order: files already present (and verified) in the data directory, an offline mirror whose files are
checked against its ``SHA256SUMS``, or torchvision's normal download. Whatever is installed gets a
SHA-256 manifest next to it, and every load re-checks the files against it, so a corrupted file stops
the run with a clear message instead of silently training on garbage.

Whole datasets are small enough to live in one tensor on the device, so everything is converted and
normalised in one batched operation (no per-sample loops, no DataLoader).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity
from torchvision.transforms.v2 import functional as TF

DATASETS = ("mnist", "cifar10")


class DataError(Exception):
    """A user-facing data problem (missing, unverifiable or corrupt files, bad arguments).

    Callers print the message and exit with status 2.
    """


@dataclass
class DataSplits:
    """Normalised NCHW image tensors and int64 labels for train/val/test, all on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    source: str


@dataclass(frozen=True)
class _Spec:
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_test: int
    mirror_files: tuple[str, ...]  # what the mirror (or the download site) serves
    files: dict[str, str]  # every file torchvision reads, relative to data_dir -> its well-known md5


_CIFAR_DIR = datasets.CIFAR10.base_folder
_SPECS = {
    "mnist": _Spec(
        in_channels=1,
        image_size=28,
        mean=(0.1307,),
        std=(0.3081,),
        num_train=60000,
        num_test=10000,
        mirror_files=tuple(filename for filename, _ in datasets.MNIST.resources),
        # torchvision only checks the .gz md5s; these are the standard md5s of the uncompressed files.
        files={
            "MNIST/raw/train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "MNIST/raw/train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "MNIST/raw/t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "MNIST/raw/t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "cifar10": _Spec(
        in_channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        num_train=50000,
        num_test=10000,
        mirror_files=(datasets.CIFAR10.filename,),
        files={
            f"{_CIFAR_DIR}/{filename}": md5
            for filename, md5 in [
                *datasets.CIFAR10.train_list,
                *datasets.CIFAR10.test_list,
                (datasets.CIFAR10.meta["filename"], datasets.CIFAR10.meta["md5"]),
            ]
        },
    ),
}


def resolve_data_dir(cli_value: str | None) -> Path:
    """Where datasets live: ``--data-dir`` beats ``NOPROP_DATA_DIR`` beats ``./data``."""
    return Path(cli_value or os.environ.get("NOPROP_DATA_DIR") or "data").expanduser()


def resolve_mirror(cli_value: str | None) -> Path | None:
    """Offline mirror to install from: ``--data-mirror`` beats ``NOPROP_DATA_MIRROR``; None if neither."""
    value = cli_value or os.environ.get("NOPROP_DATA_MIRROR")
    return Path(value).expanduser() if value else None


def prepare(name: str, data_dir: Path, mirror: Path | None) -> str:
    """Make sure the raw dataset files are in data_dir; return the source description.

    Verified files already in data_dir win; otherwise install from the mirror, otherwise download.
    """
    spec = _spec(name)
    data_dir = Path(data_dir)
    if _files_verified(name, data_dir):
        return f"existing:{data_dir}"
    if mirror is not None:
        _install_from_mirror(name, data_dir, Path(mirror))
        source = f"mirror:{mirror}"
    else:
        _download(name, data_dir)
        bad = _stock_mismatches(spec, data_dir)
        if bad:
            raise DataError(
                f"{name} files in {data_dir} do not match their known checksums: "
                f"{', '.join(map(str, bad))}. Delete them and re-run."
            )
        source = "download"
    _write_manifest(name, data_dir)
    return source


def load_splits(
    name: str,
    data_dir: Path,
    mirror: Path | None = None,
    *,
    val_size: int,
    split_seed: int = 0,
    train_subset: int | None = None,
    val_subset: int | None = None,
    test_subset: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DataSplits:
    """Prepare the dataset and return normalised train/val/test tensors on ``device``.

    Validation is the first ``val_size`` entries of a permutation of the official training set drawn
    from ``split_seed`` alone, so the split does not move when the training seed changes. Subsets take
    the first n of each (already permuted) split, so they are deterministic too.
    """
    spec = _spec(name)
    _check_count("val_size", val_size, spec.num_train - 1)
    train_total = spec.num_train - val_size
    for label, value, limit in (
        ("train_subset", train_subset, train_total),
        ("val_subset", val_subset, val_size),
        ("test_subset", test_subset, spec.num_test),
    ):
        if value is not None:
            _check_count(label, value, limit)

    source = prepare(name, data_dir, mirror)
    train_images, train_labels = _read(name, Path(data_dir), train=True)
    test_images, test_labels = _read(name, Path(data_dir), train=False)

    perm = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(split_seed))
    val_idx = perm[:val_size][:val_subset]
    train_idx = perm[val_size:][:train_subset]

    def images(x: torch.Tensor) -> torch.Tensor:
        # Move uint8 first (4x less to copy), then scale and normalise the whole batch at once.
        x = x.contiguous().to(device).to(torch.float32).div_(255)
        return TF.normalize(x, list(spec.mean), list(spec.std), inplace=True).to(dtype)

    def labels(y: torch.Tensor) -> torch.Tensor:
        return y.to(device=device, dtype=torch.int64)

    return DataSplits(
        name=name,
        train_x=images(train_images[train_idx]),
        train_y=labels(train_labels[train_idx]),
        val_x=images(train_images[val_idx]),
        val_y=labels(train_labels[val_idx]),
        test_x=images(test_images[:test_subset]),
        test_y=labels(test_labels[:test_subset]),
        num_classes=10,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        source=source,
    )


class _CIFAR10(datasets.CIFAR10):
    """CIFAR-10 that also accepts files matching our manifest.

    The stock class only knows the md5s of the original batches; a faithful mirror may repackage them
    (same pixels, different bytes). Such files were verified against the mirror's SHA256SUMS when
    installed and recorded in the manifest, so matching the manifest is as good as matching the md5s.
    """

    def _check_integrity(self) -> bool:
        return super()._check_integrity() or _matches_manifest("cifar10", Path(self.root))


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _SPECS[name]


def _check_count(label: str, value: int, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise DataError(f"{label} must be an integer between 1 and {limit}, got {value!r}")


def _read(name: str, data_dir: Path, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole official split as uint8 NCHW images and int64 labels."""
    if name == "mnist":
        mnist = datasets.MNIST(data_dir, train=train)
        return mnist.data.unsqueeze(1), mnist.targets
    cifar = _CIFAR10(data_dir, train=train)
    return torch.from_numpy(cifar.data).permute(0, 3, 1, 2), torch.tensor(cifar.targets)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _manifest_path(name: str, data_dir: Path) -> Path:
    return data_dir / f"{name}.sha256.json"


def _write_manifest(name: str, data_dir: Path) -> None:
    digests = {rel: _sha256(data_dir / rel) for rel in _SPECS[name].files}
    _manifest_path(name, data_dir).write_text(json.dumps({"dataset": name, "files": digests}, indent=2) + "\n")


def _matches_manifest(name: str, data_dir: Path) -> bool:
    """True if a manifest exists and lists every needed file, all present and matching.

    A missing manifest or missing files just mean "not installed" (False); a file whose hash differs
    is corruption and raises, because reinstalling over it silently would hide the problem.
    """
    manifest = _manifest_path(name, data_dir)
    if not manifest.exists():
        return False
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        raise DataError(f"manifest {manifest} is unreadable ({err}); delete it and re-run") from err
    needed = _SPECS[name].files
    if any(rel not in recorded or not (data_dir / rel).is_file() for rel in needed):
        return False
    for rel in needed:
        if _sha256(data_dir / rel) != recorded[rel]:
            raise DataError(
                f"{data_dir / rel} is corrupt: its SHA-256 does not match {manifest}. "
                "Delete that file and re-run to reinstall it."
            )
    return True


def _stock_mismatches(spec: _Spec, data_dir: Path) -> list[Path]:
    """Needed files that are missing or differ from the well-known md5s."""
    return [data_dir / rel for rel, md5 in spec.files.items() if not check_integrity(str(data_dir / rel), md5)]


def _files_verified(name: str, data_dir: Path) -> bool:
    """Files present and trustworthy: by our manifest if there is one, else by the well-known md5s."""
    if _manifest_path(name, data_dir).exists():
        return _matches_manifest(name, data_dir)
    return not _stock_mismatches(_SPECS[name], data_dir)


def _read_sha256sums(mirror: Path) -> dict[str, str]:
    sums_file = mirror / "SHA256SUMS"
    if not mirror.is_dir():
        raise DataError(f"data mirror {mirror} is not a directory")
    if not sums_file.is_file():
        raise DataError(f"data mirror {mirror} has no SHA256SUMS file, so its files cannot be verified")
    sums = {}
    for line in sums_file.read_text().splitlines():
        digest, _, filename = line.strip().partition(" ")
        if filename:
            sums[filename.strip().lstrip("*")] = digest.lower()
    return sums


def _install_from_mirror(name: str, data_dir: Path, mirror: Path) -> None:
    """Verify the mirror's files against its SHA256SUMS, then unpack them where torchvision looks."""
    sums = _read_sha256sums(mirror)
    archives = []
    for filename in _SPECS[name].mirror_files:
        path = mirror / filename
        if not path.is_file():
            raise DataError(f"data mirror {mirror} is missing {filename}")
        if filename not in sums:
            raise DataError(f"{filename} is not listed in {mirror / 'SHA256SUMS'}, so it cannot be verified")
        if _sha256(path) != sums[filename]:
            raise DataError(f"{path} does not match its SHA-256 in {mirror / 'SHA256SUMS'}; the mirror copy is corrupt")
        archives.append(path)

    if name == "mnist":
        raw = data_dir / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            with gzip.open(archive, "rb") as src, open(raw / archive.name.removesuffix(".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(data_dir, filter="data")


def _download(name: str, data_dir: Path) -> None:
    """torchvision's own download (it checks its md5s); without network, explain the alternatives."""
    dataset_cls = datasets.MNIST if name == "mnist" else datasets.CIFAR10
    try:
        dataset_cls(data_dir, train=False, download=True)
    except (OSError, RuntimeError) as err:
        raise DataError(
            f"{name} is not in {data_dir} and downloading it failed ({err}); this machine may have no network. "
            "Either point --data-dir (or NOPROP_DATA_DIR) at a directory that already holds the dataset, "
            "or point --data-mirror (or NOPROP_DATA_MIRROR) at an offline mirror with a SHA256SUMS file, "
            "e.g. --data-mirror ../shared/datasets"
        ) from err
