#!/usr/bin/env python
"""Benchmark content digests (mlmd_cache.cache.digests): SHA-256 throughput of one large file on one core.

The script writes one file of ``--size`` GB (a seeded 16 MiB pseudo-random block, repeated: SHA-256
runs at the same speed on any bytes) in a temporary directory (``--dir``), pins itself to one CPU
and measures, as the median of ``--repeat`` samples:

(warm)  ``digest_path`` with the file in the page cache (read once before);
(cold)  ``digest_path`` right after the file's pages were dropped from the page cache: ``fsync`` and
        ``posix_fadvise(POSIX_FADV_DONTNEED)`` on that file only (no global ``drop_caches``, which
        would slow every other process on the machine). On a virtual machine the host may still
        cache the disk, so "cold" is the guest's cold;
(read)  the same 1 MiB reads without hashing, warm: the floor the digest cannot beat;
(stdlib) ``hashlib.file_digest`` (256 KiB reads), warm, for comparison.

Each is given per wall-clock second and per CPU second of this process (user + system): on a
machine busy with other work the wall figure falls while the CPU figure, the cost on one core,
holds. The target is judged on the CPU figure of the warm digest.

It also digests a directory of ``--files`` small files (4 KiB each) and reports files per second,
the cost of the tree walk and of one open per file.

The target is warm throughput per CPU second >= 0.5 GB/s (1 GB = 10^9 bytes); the script prints the ratio to it
and exits with status 1 when it is missed. ``--json`` prints one JSON object instead (for
scripts/bench_lookup.py). The file and directory are deleted afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlmd_cache.cache.digests import digest_path  # noqa: E402

TARGET_GB_PER_S = 0.5
_BLOCK = 16 << 20
_READ = 1 << 20


def write_file(path: Path, size: int, seed: int = 0) -> None:
    block = random.Random(seed).randbytes(_BLOCK)
    with open(path, "wb") as file:
        left = size
        while left > 0:
            file.write(block[:min(left, _BLOCK)])
            left -= _BLOCK
        file.flush()
        os.fsync(file.fileno())


def drop_from_page_cache(path: Path) -> None:
    """Evict one file's (clean) pages from the page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def read_only(path: Path) -> None:
    buffer = memoryview(bytearray(_READ))
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def stdlib_digest(path: Path) -> None:
    with open(path, "rb") as file:
        hashlib.file_digest(file, "sha256")


def median_seconds(action: Callable[[], Any], repeat: int, before: Optional[Callable[[], None]] = None
                   ) -> tuple[float, float]:
    """The medians of wall time and of this process's CPU time (user + system)."""
    wall, cpu = [], []
    for _ in range(repeat):
        if before is not None:
            before()
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def pin_to_one_cpu() -> Optional[int]:
    """Run on one CPU (the first this process may use): the figure is per core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def measure(size: int, directory: Path, repeat: int = 3, files: int = 2000) -> dict[str, Any]:
    """The measurements of the module docstring, for a file of ``size`` bytes under ``directory``."""
    cpu = pin_to_one_cpu()
    with tempfile.TemporaryDirectory(prefix="bench-digest-", dir=directory) as scratch:
        path = Path(scratch) / "large.bin"
        write_file(path, size)
        read_only(path)  # warm
        warm = median_seconds(lambda: digest_path(path), repeat)
        read = median_seconds(lambda: read_only(path), repeat)
        stdlib = median_seconds(lambda: stdlib_digest(path), repeat)
        cold = median_seconds(lambda: digest_path(path), repeat, before=lambda: drop_from_page_cache(path))
        os.remove(path)
        tree = Path(scratch) / "tree"
        block = random.Random(1).randbytes(4096)
        for index in range(files):
            sub = tree / f"{index % 50:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{index}.bin").write_bytes(block)
        digest_path(tree)  # warm
        tree_seconds = median_seconds(lambda: digest_path(tree), repeat)
    rate = lambda seconds: size / seconds / 1e9  # noqa: E731
    result: dict[str, Any] = {"size_bytes": size, "cpu": cpu, "repeat": repeat, "tree_files": files,
                              "load_average": os.getloadavg()[0]}
    for name, (wall, cpu_seconds) in (("warm", warm), ("cold", cold), ("read_only", read),
                                      ("hashlib_file_digest", stdlib)):
        result[f"{name}_gb_per_s"] = rate(wall)
        result[f"{name}_gb_per_cpu_s"] = rate(cpu_seconds)
    result["tree_files_per_s"] = files / tree_seconds[0]
    result["tree_files_per_cpu_s"] = files / tree_seconds[1]
    result.update(target_gb_per_s=TARGET_GB_PER_S, ratio_to_target=result["warm_gb_per_cpu_s"] / TARGET_GB_PER_S,
                  ok=result["warm_gb_per_cpu_s"] >= TARGET_GB_PER_S)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=1.0, metavar="GB", help="file size in GB (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="samples per measurement (default 3)")
    parser.add_argument("--files", type=int, default=2000, help="files in the directory measurement (default 2000)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary file goes (default: the system's temporary directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.repeat < 1 or args.files < 1:
        parser.error("--size, --repeat and --files must be positive")
    result = measure(int(args.size * 1e9), args.dir, args.repeat, args.files)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"digest of a {result['size_bytes'] / 1e9:g} GB file on CPU {result['cpu']}, median of "
              f"{result['repeat']} (load average {result['load_average']:.1f} at the end):")
        print(f"  {'':<30}{'GB/s wall':>10}{'GB/s CPU':>10}")
        for name, label in (("warm", "digest, warm (page cache)"), ("cold", "digest, cold (pages evicted)"),
                            ("read_only", "read only, no hashing"), ("hashlib_file_digest", "hashlib.file_digest")):
            print(f"  {label:<30}{result[name + '_gb_per_s']:>10.2f}{result[name + '_gb_per_cpu_s']:>10.2f}")
        print(f"  directory of {result['tree_files']} x 4 KiB files: {result['tree_files_per_s']:,.0f} files/s wall, "
              f"{result['tree_files_per_cpu_s']:,.0f} per CPU second")
        verdict = "PASS" if result["ok"] else "FAIL"
        print(f"{verdict}  warm digest {result['warm_gb_per_cpu_s']:.2f} GB per CPU second >= {TARGET_GB_PER_S}: "
              f"ratio {result['ratio_to_target']:.1f}x the target")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
