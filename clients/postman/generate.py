#!/usr/bin/env python3
"""Generates the Postman collection (v2.1) and its environment from easel's /openapi.json.

    python3 clients/postman/generate.py --openapi http://127.0.0.1:8080/openapi.json --out clients/postman

Every route of the document becomes one request: its path, its method, the API key header
when the route has a security requirement, its first JSON body example, and a test of the
status the document promises (its lowest 2xx answer). Requests run in an order that makes
each one meaningful against a fresh `easel up` — a job is submitted before it is read,
followed and cancelled, a key is made before it is revoked, a user before they log in — and
scripts carry the ids from one answer to the next request. Nothing about the bodies is
written here: they come from the document, so the collection follows the API. The drift gate
(tests/clients) regenerates the collection from the served document and fails when the
committed one differs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"

# The order requests run in, by operationId; routes not named here run after these, in the
# document's order, with the generic treatment.
ORDER = [
    "healthz",
    "readyz",
    "openapi",
    "jwks",
    "metrics",
    "listModels",
    "submitJob",
    "jobEvents",
    "getJob",
    "listJobs",
    "watchJobWebSocket",
    "downloadArtifact",
    "cancelJob",
    "createApiKey",
    "listApiKeys",
    "revokeApiKey",
    "exchangeToken",
    "getUsage",
    "createUser",
    "login",
    "setUserTier",
    "disableUser",
]

# The variable each route's `{id}` takes.
PATH_IDS = {
    "getJob": "jobId",
    "jobEvents": "jobId",
    "watchJobWebSocket": "jobId",
    "cancelJob": "cancelJobId",
    "revokeApiKey": "keyId",
    "setUserTier": "userId",
    "disableUser": "userId",
    "downloadArtifact": "artifactId",
}

# Scripts run after a request (its answer is `body`), saving what later requests need.
# Field names are read in both proto3 JSON spellings (camelCase and snake_case).
CAPTURES = {
    "submitJob": "pm.collectionVariables.set('jobId', body.job.id);",
    "getJob": (
        "const output = (body.job.outputs || [])[0];\n"
        "pm.test('the job succeeded with an image', () => pm.expect(output).to.be.an('object'));\n"
        "const link = new URL(output.url);\n"
        "pm.collectionVariables.set('artifactId', link.pathname.split('/').pop());\n"
        "pm.collectionVariables.set('artifactQuery', link.search.slice(1));"
    ),
    "createApiKey": "pm.collectionVariables.set('keyId', (body.key || body.apiKey || body.api_key).id);",
    "createUser": "pm.collectionVariables.set('userId', body.user.id);",
}

# Requests run before a route's own, when it needs something of its own: cancelling needs a
# job that is still running, so one is submitted just before.
SETUP = {
    "cancelJob": "submitJob",
}

# The WebSocket route answers 101 only to an Upgrade request, which Postman's HTTP runner
# does not make; without one the route refuses the request, and that is what is checked.
NOT_UPGRADED = 400


def load(source: str) -> Dict[str, Any]:
    """The document, from a URL or a file."""
    if re.match(r"^https?://", source):
        with urllib.request.urlopen(source, timeout=30) as response:
            return json.loads(response.read())
    return json.loads(pathlib.Path(source).read_text())


def operations(document: Dict[str, Any]) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(path, method, operation) of every route, in run order."""
    found = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(found, key=lambda item: rank.get(item[2]["operationId"], len(ORDER)))


def expected_status(operation: Dict[str, Any]) -> int:
    """The status a successful call answers: the lowest 2xx (101 for the WebSocket route)."""
    statuses = sorted(int(code) for code in operation.get("responses", {}) if code.isdigit())
    success = [code for code in statuses if 200 <= code < 300]
    if success:
        return success[0]
    if 101 in statuses:
        return NOT_UPGRADED
    raise SystemExit(f"{operation['operationId']}: no successful answer documented")


def body_example(operation: Dict[str, Any]) -> Optional[Any]:
    """The first JSON example of the request body, if it has one."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return None
    examples = content.get("examples") or {}
    for example in examples.values():
        if "value" in example:
            return example["value"]
    return content.get("example")


def personalise(operation_id: str, body: Any) -> Any:
    """Swaps the example's fixed email and password for the run's own, so a new user can be
    made on every run and then log in."""
    if operation_id in ("createUser", "login") and isinstance(body, dict):
        body = dict(body)
        if "email" in body:
            body["email"] = "{{userEmail}}"
        if "password" in body:
            body["password"] = "{{userPassword}}"
    return body


def url_of(path: str, operation: Dict[str, Any]) -> Dict[str, Any]:
    operation_id = operation["operationId"]
    variable = PATH_IDS.get(operation_id, "id")
    filled = re.sub(r"\{[^}]+\}", "{{" + variable + "}}", path)
    raw = "{{baseUrl}}" + filled
    url: Dict[str, Any] = {
        "raw": raw,
        "host": ["{{baseUrl}}"],
        "path": [segment for segment in filled.split("/") if segment],
    }
    if operation_id == "downloadArtifact":
        # The signed link's own query (expiry and signature) from the job's output.
        url["raw"] = raw + "?{{artifactQuery}}"
    return url


def request_item(path: str, method: str, operation: Dict[str, Any], name: Optional[str] = None) -> Dict[str, Any]:
    operation_id = operation["operationId"]
    status = expected_status(operation)
    headers = []
    if operation.get("security", [{}]) != []:
        headers.append({"key": "X-API-Key", "value": "{{apiKey}}"})
    request: Dict[str, Any] = {
        "method": method.upper(),
        "header": headers,
        "url": url_of(path, operation),
        "description": operation.get("summary", ""),
    }
    body = personalise(operation_id, body_example(operation))
    if body is not None:
        headers.append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {"mode": "raw", "raw": json.dumps(body, indent=2), "options": {"raw": {"language": "json"}}}
    checks = [f"pm.test('status is {status}', () => pm.response.to.have.status({status}));"]
    capture = CAPTURES.get(operation_id)
    if capture and name is None:
        checks.append("const body = pm.response.json();")
        checks.append(capture)
    elif operation_id == "submitJob" and name is not None:
        checks.append("pm.collectionVariables.set('cancelJobId', pm.response.json().job.id);")
    events = [{"listen": "test", "script": {"type": "text/javascript", "exec": "\n".join(checks).split("\n")}}]
    if operation_id == "createUser":
        prerequest = [
            "pm.collectionVariables.set('userEmail', `postman-${pm.variables.replaceIn('{{$randomUUID}}')}@example.com`);",
            "pm.collectionVariables.set('userPassword', pm.variables.replaceIn('{{$randomUUID}}'));",
        ]
        events.insert(0, {"listen": "prerequest", "script": {"type": "text/javascript", "exec": prerequest}})
    return {
        "name": name or f"{operation.get('summary') or operation_id} ({method.upper()} {path})",
        "event": events,
        "request": request,
    }


def collection(document: Dict[str, Any]) -> Dict[str, Any]:
    """The collection: one folder per tag, folders and requests in run order."""
    by_id = {operation["operationId"]: (path, method, operation) for path, method, operation in operations(document)}
    folders: Dict[str, List[Dict[str, Any]]] = {}
    for path, method, operation in operations(document):
        tag = (operation.get("tags") or ["other"])[0]
        items = folders.setdefault(tag, [])
        setup = SETUP.get(operation["operationId"])
        if setup in by_id:
            setup_path, setup_method, setup_operation = by_id[setup]
            items.append(request_item(setup_path, setup_method, setup_operation, name=f"{setup} (a job to cancel)"))
        items.append(request_item(path, method, operation))
    info = document.get("info", {})
    variables = ["baseUrl", "apiKey", "jobId", "cancelJobId", "artifactId", "artifactQuery", "keyId", "userId", "userEmail", "userPassword"]
    return {
        "info": {
            "name": info.get("title", "easel"),
            "description": "Generated from /openapi.json by clients/postman/generate.py; do not edit. "
            + "Set baseUrl and apiKey in the environment (easel-up.postman_environment.json).",
            "schema": SCHEMA,
        },
        "item": [{"name": tag, "item": items} for tag, items in folders.items()],
        "variable": [{"key": name, "value": ""} for name in variables if name not in ("baseUrl", "apiKey")],
    }


def environment() -> Dict[str, Any]:
    """The environment of a local `easel up`: its default URL and the key it prints."""
    return {
        "name": "easel up",
        "values": [
            {"key": "baseUrl", "value": "http://127.0.0.1:8080", "type": "default", "enabled": True},
            {"key": "apiKey", "value": "", "type": "secret", "enabled": True},
        ],
        "_postman_variable_scope": "environment",
    }


def write(path: pathlib.Path, value: Dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openapi", required=True, help="URL or file of /openapi.json")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="directory to write into")
    arguments = parser.parse_args()
    document = load(arguments.openapi)
    arguments.out.mkdir(parents=True, exist_ok=True)
    write(arguments.out / "easel.postman_collection.json", collection(document))
    write(arguments.out / "easel-up.postman_environment.json", environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
