"""MNIST (LeCun, Bottou, Bengio & Haffner 1998): four IDX files, 60,000 training and 10,000 test digits.

The files are those of LeCun's page, mirrored where the download comes from; each .gz file is
checked by its SHA-256 (TensorFlow Datasets' url_checksums/mnist.txt; torchvision's MNIST lists
the same files' MD5s). Binarized by data.binarize like Fashion-MNIST; for Larochelle's fixed
binarization use `binarized_mnist`.
"""

from __future__ import annotations

from vi_lab.data.idx import LECUN_FILES, read_lecun
from vi_lab.data.source import Checksum, Files, Source

FILES = Files(
    title="MNIST",
    folder="mnist",
    names=LECUN_FILES,
    checksums={
        "train_images": Checksum(
            "sha256", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train_labels": Checksum(
            "sha256", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "test_images": Checksum("sha256", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "test_labels": Checksum("sha256", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
    how_to_get="the same four files from http://yann.lecun.com/exdb/mnist/",
)

SOURCE = Source(FILES, read_lecun, num_valid=5000)
