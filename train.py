"""Train a VAE and write a Hugging Face Hub-ready model folder.

python train.py                                    # configs/mnist.yaml on the best device here
python train.py --epochs 5 --latent-dim 2 --hidden-dims 512 256
accelerate launch --multi_gpu --num_processes 2 train.py --config configs/fashion_mnist.yaml
"""

import sys

from vae.config import parse_config
from vae.errors import UserError


def main(argv: list[str] | None = None) -> None:
    try:
        config = parse_config(argv)
        from vae.training import (
            train,  # imported after parsing so --help and config errors are instant
        )

        train(config)
    except UserError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
