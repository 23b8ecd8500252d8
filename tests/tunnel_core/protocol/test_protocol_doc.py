"""docs/protocol.md's state tables are generated from the transition tables in mux.py.

``TUNNEL_CORE_UPDATE_DOCS=1 pytest tests/tunnel_core/protocol/test_protocol_doc.py``
rewrites the generated blocks; without it the test fails when the doc is stale.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tunnel_core.protocol.mux import (
    CONNECTION_TRANSITIONS,
    TRANSITIONS,
    Cause,
    Kind,
    Phase,
    Role,
    StreamState,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"


def stream_table() -> str:
    causes = list(Cause)
    rows = ["| State | " + " | ".join(c.value for c in causes) + " |"]
    rows.append("| --- |" + " --- |" * len(causes))
    for state in StreamState:
        if state is StreamState.CLOSED:
            continue
        cells = [TRANSITIONS.get((state, c)) for c in causes]
        rows.append(
            f"| {state.value} | " + " | ".join(n.value if n else "error" for n in cells) + " |"
        )
    return "\n".join(rows)


def connection_table() -> str:
    rows = ["| Phase | the client may send | the server may send |", "| --- | --- | --- |"]
    for phase in Phase:
        cells = []
        for sender in (Role.CLIENT, Role.SERVER):
            moves = [
                f"{kind.value} → {new.value}" if new is not phase else kind.value
                for kind in Kind
                if (new := CONNECTION_TRANSITIONS.get((phase, sender, kind))) is not None
            ]
            cells.append("; ".join(moves) or "nothing")
        rows.append(f"| {phase.value} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def render(doc: str) -> str:
    for name, table in (("stream", stream_table()), ("connection", connection_table())):
        begin, end = f"<!-- {name} table: generated -->", f"<!-- end of {name} table -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        assert pattern.search(doc), f"docs/protocol.md has no {begin} ... {end} block"
        doc = pattern.sub(lambda m, b=f"{begin}\n{table}\n{end}": b, doc)  # type: ignore[misc]
    return doc


def test_the_state_tables_in_the_protocol_doc_match_the_transition_tables():
    doc = DOC.read_text()
    expected = render(doc)
    if os.environ.get("TUNNEL_CORE_UPDATE_DOCS"):
        DOC.write_text(expected)
        doc = expected
    assert doc == expected, "docs/protocol.md is stale: run with TUNNEL_CORE_UPDATE_DOCS=1"
