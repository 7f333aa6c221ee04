"""``python -m geostudy.learners.gp.make_prior --out FILE IMAGE...``: fit a patch prior to greyscale images.

The prior (:mod:`geostudy.learners.gp.patch_prior`) refines the steering GP's first pilot; a config
uses it with ``model.steering.pilot: patch_prior`` and ``model.steering.patch_prior: FILE``. Fit it
to images like the ones to reconstruct, but not to those: a run refuses an image the prior has seen.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from geostudy.errors import GeostudyError
from geostudy.learners.gp.data import load_image
from geostudy.learners.gp.patch_prior import fit_patch_prior


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geostudy.learners.gp.make_prior",
                                     description="Fit a patch prior (Gaussian mixture) to greyscale images.")
    parser.add_argument("images", nargs="+", help="image files or skimage.data names (e.g. astronaut coffee)")
    parser.add_argument("--out", required=True, help="the prior file to write (.npz)")
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--patches", type=int, default=60000, help="training patches in all")
    parser.add_argument("--iterations", type=int, default=40, help="EM iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, low in (("patch", 2), ("components", 1), ("patches", args.components), ("iterations", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be >= {low}, but got {getattr(args, name)}")
    try:
        images = [load_image(name, None).values[0] for name in args.images]
    except GeostudyError as err:
        where = f"{err.file}: " if err.file else ""  # its key is a config's, not this command's
        print(f"error: {where}{err.message}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    print(f"fitting {args.components} components to {args.patches} {args.patch}x{args.patch} patches of "
          f"{len(images)} images...", file=sys.stderr, flush=True)
    prior = fit_patch_prior(images, [Path(n).name for n in args.images], patch=args.patch,
                            components=args.components, patches=args.patches, iterations=args.iterations,
                            seed=args.seed)
    print(f"wrote {prior.save(args.out)} in {time.perf_counter() - began:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
