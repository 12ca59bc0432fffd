"""``python -m training.open_clip_entry ARGS``: OpenCLIP's own trainer, with our model configs known.

OpenCLIP only knows the model configs it ships; ours (``training/model_configs``) must be
registered inside the training process itself (and in every torchrun worker), so the
launcher runs this module instead of ``open_clip_train.main``. Nothing else is changed:
the arguments go to ``open_clip_train.main.main`` as they are.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from training import register_model_configs

    register_model_configs()
    from open_clip_train.main import main as open_clip_main

    rc = open_clip_main(list(sys.argv[1:] if argv is None else argv))
    return 1 if rc == -1 else 0


if __name__ == "__main__":
    sys.exit(main())
