#!/usr/bin/env python3
"""Validates a Compose file against the compose-spec JSON schema vendored beside it
(deploy/compose/compose-spec.schema.json, the schema docker-compose 1.29.2 ships, from PyPI)
after resolving YAML anchors and merge keys, as Compose does; then checks what the schema
cannot: every `depends_on` names a service of the file and every named volume is declared.
Usage: validate-compose.py COMPOSE.yaml"""

import json
import pathlib
import sys

import jsonschema
import yaml

path = pathlib.Path(sys.argv[1])
schema = json.loads((path.parent / "compose-spec.schema.json").read_text(encoding="utf-8"))
document = yaml.safe_load(path.read_text(encoding="utf-8"))
# Extension fields (x-…) hold anchors only.
for key in [key for key in document if key.startswith("x-")]:
    del document[key]

errors = sorted(
    jsonschema.Draft201909Validator(schema).iter_errors(document), key=lambda error: error.path
)
problems = [f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors]
services = document.get("services", {})
volumes = set(document.get("volumes") or {})
for name, service in services.items():
    for dependency in service.get("depends_on") or []:
        if dependency not in services:
            problems.append(f"services/{name}: depends on unknown service {dependency}")
    for volume in service.get("volumes") or []:
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source and not source.startswith((".", "/")) and source not in volumes:
            problems.append(f"services/{name}: volume {source} is not declared")
        if source.startswith("."):
            if not (path.parent / source).exists():
                problems.append(f"services/{name}: mounts {source}, which does not exist")
if problems:
    sys.exit("\n".join(f"{path}: {problem}" for problem in problems))
print(f"{path}: {len(services)} services valid against the compose-spec schema")
