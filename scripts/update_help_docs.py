"""Rewrite the ``--help`` blocks of docs/reference/commands.md from the commands themselves, as a
user at /home/me with a 100-column terminal sees them (what tests/test_docs_site.py compares).

    .venv/bin/python scripts/update_help_docs.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "commands.md"
HELP_BLOCK = re.compile(r"^```text\n\$ ((?:mlmd-cache|mlmd-lineage)[\w -]*? --help)\n(.*?)^```\n", re.M | re.S)


def main() -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MLMD_"))},
           "HOME": "/home/me", "COLUMNS": "100"}

    def live(match: re.Match) -> str:
        program, *args = match[1].split()
        done = subprocess.run([str(Path(sys.executable).parent / program), *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=60, check=True)
        return f"```text\n$ {match[1]}\n{done.stdout}```\n"

    text = PAGE.read_text()
    updated = HELP_BLOCK.sub(live, text)
    PAGE.write_text(updated)
    print(f"{PAGE.relative_to(ROOT)}: {'updated' if updated != text else 'unchanged'}")


if __name__ == "__main__":
    main()
