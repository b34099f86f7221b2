"""The examples under examples/ at least parse (they need a running platform to do more)."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples"


def test_the_batch_example_parses_and_submits_100_prompts() -> None:
    source = (EXAMPLES / "batch.py").read_text()
    ast.parse(source)
    namespace: dict = {}
    # Only the prompt table, not the program: it needs a platform to run.
    tree = ast.parse(source)
    table = [node for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id in ("SUBJECTS", "STYLES", "PROMPTS")]  # type: ignore[attr-defined]
    exec(compile(ast.Module(body=table, type_ignores=[]), "batch.py", "exec"), namespace)
    assert len(namespace["PROMPTS"]) == 100
    assert len(set(namespace["PROMPTS"])) == 100


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_node_example_parses() -> None:
    subprocess.run(["node", "--check", str(EXAMPLES / "stream.mjs")], check=True)
