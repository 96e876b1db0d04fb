#!/usr/bin/env python3
"""Prints which top-level modules of src/ import which, from `crate::` paths.

Usage: scripts/import_graph.py [SRC_DIR]. A module's own tests count too. One row per
module: the modules it imports, and the number of `crate::<other>` mentions.
"""
import collections
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
top = sorted(
    name[:-3] if name.endswith(".rs") else name
    for name in os.listdir(src)
    if name not in ("lib.rs", "main.rs") and (name.endswith(".rs") or os.path.isdir(os.path.join(src, name)))
)
pattern = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
edges = collections.defaultdict(collections.Counter)
for module in top:
    paths = []
    base = os.path.join(src, module)
    if os.path.isdir(base):
        for root, _, files in os.walk(base):
            paths += [os.path.join(root, f) for f in files if f.endswith(".rs")]
    else:
        paths.append(base + ".rs")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for other in pattern.findall(f.read()):
                if other != module and other in top:
                    edges[module][other] += 1
print("| module | imports |")
print("|---|---|")
for module in top:
    row = ", ".join(f"{m} ({n})" for m, n in sorted(edges[module].items()))
    print(f"| {module} | {row or '-'} |")
