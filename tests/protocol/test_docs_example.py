"""docs/protocol.md's worked example is the output of tests/protocol/worked_example.py, exactly."""

from __future__ import annotations

from tests.protocol.worked_example import (
    DOC_PATH,
    REGENERATE_COMMAND,
    extract_section,
    render,
)


def test_the_worked_example_in_the_spec_is_what_the_protocol_code_produces() -> None:
    documented = extract_section(DOC_PATH.read_text(encoding="utf-8"))
    generated = render()
    assert documented == generated, (
        "docs/protocol.md's worked example no longer matches the bytes the protocol code"
        f" produces. Regenerate it with `{REGENERATE_COMMAND}` (or paste the output of"
        " `python -m tests.protocol.worked_example` between the worked-example markers),"
        " then review the diff: if the protocol changed, the prose of the spec may need the"
        " same change."
    )


def test_the_worked_example_is_deterministic() -> None:
    assert render() == render()
