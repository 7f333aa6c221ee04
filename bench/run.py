"""Run one benchmark and print ours vs baseline side by side.

Usage: ``python bench/run.py NAME [--quick] [--rows GROUP]`` (or ``all``); ``--rows`` runs one group of a
bench's rows where the bench has groups (gp: ``image``, ``stations``). Each ``bench/<NAME>.py`` defines
``run(quick: bool) -> list[dict]`` whose rows carry ``work``, ``unit``, ``ours``, ``baseline``,
``baseline_name`` and ``lower_is_better``; this script adds the machine, writes
``out/bench/NAME.json`` (format in DESIGN.md) and prints the table with the ratio ours/baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geostudy  # noqa: E402,F401  (sets DGLBACKEND / MPLBACKEND before any bench imports)

BENCH_DIR = Path(__file__).resolve().parent
ROW_KEYS = ("work", "unit", "ours", "baseline", "baseline_name", "lower_is_better")


def list_benches() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem not in {"run", "__init__"} and not p.stem.startswith("_"))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu}


def format_table(name: str, rows: list[dict]) -> str:
    # Rows that carry a paired difference with its standard error (``diff``, ``diff_se``, optionally
    # ``groups_lower``) get it printed beside the ratio, so a reader sees whether the gap exceeds the noise.
    paired = any("diff_se" in r for r in rows)
    head = ["work", "ours", "baseline", "ours/baseline", *(["ours-baseline ± se (groups lower)"] if paired else []),
            "unit", "baseline_name", "goal"]
    body = []
    for r in rows:
        ours, base = r["ours"], r["baseline"]
        ratio = ours / base if isinstance(base, (int, float)) and base not in (0, None) and math.isfinite(base) else float("nan")
        diff = [f"{r['diff']:+.3g} ± {r['diff_se']:.2g} ({r.get('groups_lower', '-')})" if "diff_se" in r else ""]
        body.append([r["work"], f"{ours:.4g}", f"{base:.4g}", f"{ratio:.3g}", *(diff if paired else []), r.get("unit", ""),
                     r.get("baseline_name", ""), r.get("goal", "")])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"bench {name}", "  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def run_bench(name: str, quick: bool, out_dir: Path, row_group: str | None = None) -> dict:
    module = importlib.import_module(f"bench.{name}")
    start = time.perf_counter()
    rows = module.run(quick=quick) if row_group is None else module.run(quick=quick, rows=row_group)
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"bench {name}: row {row.get('work')!r} lacks {missing}")
        row["ours"], row["baseline"] = float(row["ours"]), float(row["baseline"])
    result = {
        "bench": name,
        "quick": quick,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if row_group is not None:  # a part of the bench: its own file, the full one stays as it was
        result["rows_group"] = row_group
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (f"{name}.json" if row_group is None else f"{name}-{row_group}.json")
    target.write_text(json.dumps(result, indent=2))
    print(format_table(name, rows))
    print(f"({result['seconds']} s; written to {target})\n", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    names = list_benches()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"one of: {', '.join(names)}, or all")
    parser.add_argument("--quick", action="store_true", help="small sizes, minutes not hours")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench"), help="folder for NAME.json")
    parser.add_argument("--rows", help="only this group of a bench's rows (e.g. gp: image | stations)")
    args = parser.parse_args(argv)
    if args.name != "all" and args.name not in names:
        print(f"error: unknown bench {args.name!r}; allowed: {', '.join(names)}, all", file=sys.stderr)
        return 2
    if args.rows is not None and args.name == "all":
        print("error: --rows needs one bench name, not all", file=sys.stderr)
        return 2
    for name in names if args.name == "all" else [args.name]:
        if args.rows is not None and "rows" not in inspect.signature(importlib.import_module(f"bench.{name}").run).parameters:
            print(f"error: bench {name!r} has no row groups (--rows)", file=sys.stderr)
            return 2
        run_bench(name, args.quick, Path(args.out), args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
