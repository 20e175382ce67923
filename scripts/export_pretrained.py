"""Publish a finished run as a pretrained model: `pretrained/<name>/` (see
keras_stm.experiments.pretrained).

    python scripts/export_pretrained.py RUN_DIR NAME --gpu-minutes 6.5 --commit abc1234 \\
        --command "KERAS_BACKEND=jax python examples/associative_retrieval.py --num-pairs 14"

Adds to the copied results.json: the commit that trained it, the GPU-minutes (wall-clock
minutes of the card, compilation included), the command, and how the run was made.
"""

import argparse
import os

from keras_stm.experiments import pretrained


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="The run's output folder (best.keras, results.json).")
    parser.add_argument("name", help="Folder name under pretrained/.")
    parser.add_argument(
        "--gpu-minutes",
        type=float,
        required=True,
        help="GPU wall-clock minutes the run took, compilation included.",
    )
    parser.add_argument("--commit", required=True, help="The commit whose code trained it.")
    parser.add_argument("--command", required=True, help="The command that trained it.")
    parser.add_argument("--note", default=None, help="How the run was made (sharing, resumes).")
    parser.add_argument("--root", default=pretrained.ROOT, help="The pretrained/ folder.")
    args = parser.parse_args(argv)
    extra = {"commit": args.commit, "gpu_minutes": args.gpu_minutes, "command": args.command}
    if args.note:
        extra["note"] = args.note
    path = pretrained.export(args.run_dir, os.path.join(args.root, args.name), extra)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
