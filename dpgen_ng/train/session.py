"""``python -m dpgen_ng.train.session FLAG STEP...``: DeePMD-kit's ``dp FLAG STEP`` for each step in
one process (e.g. ``train input.json`` then ``freeze -o frozen_model.pb``).

Every ``dp`` call pays the import of TensorFlow or PyTorch (8-12 s on a small box); a training
task's train, freeze and compress share one. Used when the train stage runs here with the
venv's own ``dp``; elsewhere the task runs ``dp`` once per step, as DP-GEN does.
"""

from __future__ import annotations

import shlex
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m dpgen_ng.train.session --tf|--pt 'train input.json' 'freeze ...'",
              file=sys.stderr)
        return 2
    from deepmd.main import main as dp

    flag, steps = argv[0], argv[1:]
    for step in steps:
        dp([flag, *shlex.split(step)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
