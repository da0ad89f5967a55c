"""Write the small slice of real MNIST committed for the tests (the first 1,200 training and 300 test
digits, in the official IDX format, gzipped). Run once from the repository root:

    python tests/data/make_mnist_slice.py ../shared/data/MNIST/raw
"""

import gzip
import sys
from pathlib import Path

SLICE = {"train": 1200, "t10k": 300}


def main(raw: str) -> None:
    out = Path(__file__).parent / "mnist-slice"
    out.mkdir(exist_ok=True)
    for split, n in SLICE.items():
        images = (Path(raw) / f"{split}-images-idx3-ubyte").read_bytes()
        labels = (Path(raw) / f"{split}-labels-idx1-ubyte").read_bytes()
        # IDX headers: magic + dimensions as big-endian int32; patch the count, keep the first n records.
        header = images[:4] + n.to_bytes(4, "big") + images[8:16]
        images_out = header + images[16 : 16 + n * 784]
        labels_out = labels[:4] + n.to_bytes(4, "big") + labels[8 : 8 + n]
        for name, data in (
            (f"{split}-images-idx3-ubyte.gz", images_out),
            (f"{split}-labels-idx1-ubyte.gz", labels_out),
        ):
            with gzip.GzipFile(out / name, "wb", mtime=0) as f:
                f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
