"""The README's shell blocks, by how they are run: `python .ci/readme_blocks.py README.md CONTEXT [DIR]`.

Every fenced shell block (```bash) in the README is preceded by a marker line:

    <!-- runnable: install -->    CI runs it in a plain clone, with the network (the install)
    <!-- runnable: offline -->    CI runs it in that plain clone with the network cut, in README order
    <!-- runnable: workspace -->  needs the data beside the repo; CI runs these commands on the workspace sample
    <!-- not run: <reason> -->    shown, not run (the reason says why)

Prints the blocks of CONTEXT as one bash script that stops at the first failing command and echoes
each command; with DIR, writes each block as its own script DIR/<n>.sh instead (CI times each) and
prints their paths. ``blocks()`` is what tests/test_readme.py checks.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = re.compile(r"<!-- (?:runnable: (?P<context>[a-z]+)|not run: (?P<reason>[^>]+?)) -->")
FENCE = re.compile(r"^```(?P<lang>\S*)\n(?P<body>.*?)^```$", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console"}
CONTEXTS = ("install", "offline", "workspace")


def blocks(text: str) -> list[dict]:
    """Every fenced block: its language, body, marker context (or not-run reason) and line number."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        found.append({"lang": match["lang"], "body": match["body"], "line": text[: match.start()].count("\n") + 1,
                      "context": marker["context"] if marker else None,
                      "reason": marker["reason"] if marker else None})
    return found


def script(text: str, context: str) -> list[str]:
    """One bash script per block of ``context``, in README order."""
    return [f"set -euxo pipefail\n# README line {block['line']}\n{block['body']}"
            for block in blocks(text) if block["context"] == context]


if __name__ == "__main__":
    path, context, *folder = sys.argv[1:]
    if context not in CONTEXTS:
        sys.exit(f"context must be one of {', '.join(CONTEXTS)}")
    scripts = script(Path(path).read_text(), context)
    if not scripts:
        sys.exit(f"{path} has no block marked 'runnable: {context}'")
    if folder:
        for n, body in enumerate(scripts, start=1):
            out = Path(folder[0]) / f"{n:02d}.sh"
            out.write_text(body)
            print(out)
    else:
        sys.stdout.write("".join(body.replace("set -euxo pipefail\n", "", n > 0) for n, body in enumerate(scripts)))
