#!/usr/bin/env python3
"""Checks that every metric a Grafana dashboard or a PrometheusRule queries is one the services
export: each name (less a histogram's _bucket/_count/_sum) must appear as a string literal in
the Rust sources. A renamed metric then fails the test command instead of leaving a dead panel
or an alert that never fires. Usage: check-metric-names.py FILE...  (JSON or YAML)"""

import pathlib
import re
import sys

PREFIXES = ("easel_", "comfyui_", "bridge_", "grpc_", "server_", "storage_", "gateway_", "http_")
NAME = re.compile(r"\b([a-z][a-z0-9_]*)\b")

root = pathlib.Path(__file__).resolve().parent.parent
exported = set()
for source in list(root.glob("services/*/src/**/*.rs")) + list(root.glob("crates/*/src/**/*.rs")):
    exported.update(re.findall(r'"([a-z][a-z0-9_]*)"', source.read_text(encoding="utf-8")))

queried = set()
for path in sys.argv[1:]:
    text = pathlib.Path(path).read_text(encoding="utf-8")
    for expression in re.findall(r'"expr":\s*"((?:[^"\\]|\\.)*)"|expr:\s*\|?\s*\n?((?:.*\n)*?)\s*(?:for|labels):', text):
        for name in NAME.findall(" ".join(expression)):
            if name.startswith(PREFIXES):
                queried.add(re.sub(r"_(bucket|count|sum)$", "", name))

missing = sorted(name for name in queried if name not in exported)
if missing:
    sys.exit(f"queried but exported by no service: {', '.join(missing)}")
if not queried:
    sys.exit("no metric found in the files: the check found nothing to check")
print(f"dashboard and alerts: all {len(queried)} metrics are exported")
