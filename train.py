"""Train a VAE and write a Hugging Face Hub-ready model folder.

python train.py                                    # configs/mnist.yaml on the best device here
python train.py --epochs 5 --latent-dim 2 --hidden-dims 512 256
accelerate launch --multi_gpu --num_processes 2 train.py --config configs/fashion_mnist.yaml
"""

import shlex
import signal
import sys

from vae.config import parse_config, share_cores
from vae.errors import Interrupted, UserError, command

share_cores()  # before torch is imported


def resume_command(argv: list[str]) -> str:
    args = argv if "--resume" in argv else [*argv, "--resume"]
    return shlex.join(["python", "train.py", *args])


@command
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse_config(argv)
        if config.push_to_hub:  # the Hub's answer before the trainer's imports (~3 s): a refusal comes at once
            from vae.hub import check_hub_access

            check_hub_access(config.hub_model_id)
        try:
            from vae.training import train  # after parsing: --help and config errors are instant
        except ModuleNotFoundError as err:  # an install without the trainer's packages: no Accelerate, no torchvision
            raise UserError(
                f"train.py needs {err.name}, which is not installed: the trainer's packages are in "
                "requirements.txt (pip install -r requirements.txt)."
            ) from None

        train(config, hub_checked=config.push_to_hub)
    except Interrupted as stop:  # SIGINT / SIGTERM: stopped at a step boundary, temporary files removed
        saved = f"epoch {stop.resume_epoch}" if stop.resume_epoch else "no epoch yet"
        print(
            f"stopped by {stop}; last complete checkpoint: {saved}. Resume with: {resume_command(argv)}",
            file=sys.stderr,
        )
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one
        print(f"stopped by SIGINT. Resume with: {resume_command(argv)}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
