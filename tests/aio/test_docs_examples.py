"""The examples of docs/asyncio.md run as written (in order, sharing one namespace, as a reader would
paste them), with FastAPI's real test client."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncio.md"


def test_every_python_example_in_the_asyncio_page_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 4, "the page lost its examples"
    namespace: dict[str, object] = {"__name__": "docs_asyncio"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name}[example {number}]", "exec"), namespace)
