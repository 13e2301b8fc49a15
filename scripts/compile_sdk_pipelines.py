#!/usr/bin/env python3
"""Recompile the test pipelines of ``tests/data/sdk/sources.py`` with every KFP SDK 2.x we support.

Why: a pipeline's IR is written by the SDK that compiled it, not by the kfp installed beside
mlmd-cache (2.13.0). Later SDKs write fields that kfp-pipeline-spec 0.6.0 does not know, another
lightweight-component preamble (``pip install kfp==<its version>``) and another executor; the
committed YAML of each version lets ``tests/test_sdk_versions.py`` load, plan and run them all
without network, and check that every version gives the same results.

How: for each version of :data:`VERSIONS`, a throwaway venv (``python -m venv`` in a temporary
directory, with the Python running this script: 3.11) gets that ``kfp`` from PyPI, compiles every
pipeline of ``sources.PIPELINES`` into ``tests/data/sdk/kfp-<version>/<name>.yaml`` (from kfp 2.17
on, also those of ``sources_new.py``, which use what 2.17 added, into ``kfp-<version>/new/``) and is
removed.
The output is deterministic (the compiler writes no timestamps; the files are written in a fixed
order), so re-running it changes nothing unless an SDK's compiler changed. Needs PyPI; a minute or
two per version, most of it ``pip install``.

Run it from the checkout, with the dev venv's Python or any Python 3.11::

    .venv/bin/python scripts/compile_sdk_pipelines.py             # every version
    .venv/bin/python scripts/compile_sdk_pipelines.py 2.17.3      # only these versions

then commit ``tests/data/sdk/``. To add an SDK version, add it to :data:`VERSIONS` (and to the
tests' list, which reads the folders).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# kfp 2.13.0 (mlmd-cache's own) and the newest patch of each later minor version, as on PyPI when
# written (`pip index versions kfp`).
VERSIONS = ("2.13.0", "2.14.6", "2.15.2", "2.16.1", "2.17.3")

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sdk"

# sources_new.py uses what kfp 2.17 added (dsl.PipelineConfig's workspace and TTLs, dsl.TaskConfig):
# compiled into kfp-<version>/new/ from this version on.
NEW_SINCE = (2, 17)

# Runs inside the throwaway venv: compile every pipeline of a sources file into the given folder.
_COMPILE = """
import importlib.util, os, sys, warnings
warnings.simplefilter("ignore")  # kfp's notices (default base image, Python version) are not output
from kfp import compiler
spec = importlib.util.spec_from_file_location("sources", sys.argv[1])
sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sources)
os.makedirs(sys.argv[2], exist_ok=True)
for name, pipeline in sorted(sources.PIPELINES.items()):
    compiler.Compiler().compile(pipeline, f"{sys.argv[2]}/{name}.yaml")
    print(f"  {os.path.basename(sys.argv[2])}/{name}.yaml")
"""


def compile_version(version: str, python: str = sys.executable) -> Path:
    """Compile every pipeline with kfp ``version`` in a throwaway venv; returns the output folder,
    replaced as a whole (a pipeline removed from sources.py does not linger)."""
    out = DATA / f"kfp-{version}"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix=f"kfp-{version}-") as temp:
        venv = Path(temp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, env=env)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"kfp=={version}"],
                       check=True, env=env)
        staged = Path(temp) / f"kfp-{version}"
        staged.mkdir()
        subprocess.run([str(venv / "bin" / "python"), "-c", _COMPILE, str(DATA / "sources.py"), str(staged)],
                       check=True, env=env, cwd=temp)
        if tuple(int(part) for part in version.split(".")[:2]) >= NEW_SINCE:
            subprocess.run([str(venv / "bin" / "python"), "-c", _COMPILE, str(DATA / "sources_new.py"),
                            str(staged / "new")], check=True, env=env, cwd=temp)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", metavar="VERSION", help=f"kfp versions (default: {' '.join(VERSIONS)})")
    args = parser.parse_args(argv)
    for version in args.versions or VERSIONS:
        print(f"kfp {version}:", flush=True)
        try:
            out = compile_version(version)
        except subprocess.CalledProcessError as error:
            print(f"kfp {version}: failed ({' '.join(map(str, error.cmd[:3]))}... exited {error.returncode})",
                  file=sys.stderr)
            return 1
        print(f"  -> {out.relative_to(DATA.parent.parent.parent)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
