"""docs/browser.md says what docs/client.md says where the two clients share a rule."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def close_code_table(name: str) -> str:
    text = (DOCS / name).read_text(encoding="utf-8")
    return text.split("<!-- close-codes:start -->\n")[1].split("<!-- close-codes:end -->")[0]


def test_the_close_code_table_in_browser_md_is_the_one_in_client_md() -> None:
    # client.md's table is checked against trioconn.CLOSE_CODES (tests/test_client.py)
    assert close_code_table("browser.md") == close_code_table("client.md")
