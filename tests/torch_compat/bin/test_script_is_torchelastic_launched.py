"""Writes ``torch.distributed.is_torchelastic_launched()`` to ``--out-file`` (the port of
torch's ``bin/test_script_is_torchelastic_launched.py``)."""

import argparse

import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-file", "--out_file", required=True)
    args = parser.parse_args()
    with open(args.out_file, "w") as out:
        out.write(f"{dist.is_torchelastic_launched()}")


if __name__ == "__main__":
    main()
