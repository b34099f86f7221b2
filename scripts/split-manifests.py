#!/usr/bin/env python3
"""Splits rendered manifests (stdin) into the objects of Kubernetes' own API groups (a YAML
stream, for kubernetes-validate) and the custom resources (a JSON array, for
scripts/validate-crds.mjs). Usage: split-manifests.py CORE.yaml CUSTOM.json < rendered.yaml"""

import json
import sys

import yaml

CUSTOM_GROUPS = ("keda.sh/", "cert-manager.io/", "monitoring.coreos.com/")

documents = [d for d in yaml.safe_load_all(sys.stdin) if d]
core = [d for d in documents if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
custom = [d for d in documents if d["apiVersion"].startswith(CUSTOM_GROUPS)]
with open(sys.argv[1], "w", encoding="utf-8") as file:
    yaml.safe_dump_all(core, file, sort_keys=False)
with open(sys.argv[2], "w", encoding="utf-8") as file:
    json.dump(custom, file)
print(f"{len(core)} {len(custom)}")
