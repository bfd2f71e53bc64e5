"""Which `Accept` headers get CSV (server/exports.py): q-values decide, not substrings."""

from __future__ import annotations

import pytest

from server.exports import prefers_csv


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("text/*", True),
        ("application/json;q=0.1, text/csv", True),
        ("text/csv, application/json;q=0.5", True),
        ("application/json;q=0, text/csv", True),
        ("text/csv;q=0.5, application/json", False),
        ("application/json, text/csv", False),  # a tie: the first listed
        ("text/csv;q=0", False),  # q=0: not acceptable at all
        ("text/csv;q=0.0, */*", False),
        ("*/*", False),
        ("", False),
        ("application/xml", False),
        ("text/csvx", False),  # a substring is not the type
    ],
)
def test_q_values_decide_between_csv_and_json(accept: str, csv: bool) -> None:
    assert prefers_csv(accept) is csv
