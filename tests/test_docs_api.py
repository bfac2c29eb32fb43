"""docs/api.md is a doctest: every example on it runs and prints what the page says."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_the_api_page_runs_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)  # the page loads tests/data/tiny_validation.yaml relative to the checkout
    failures, tried = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert tried > 10 and failures == 0
