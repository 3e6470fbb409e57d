from __future__ import annotations

import pytest

from orbit_fast.errors import UsageError
from orbit_fast.filters import FilterRules


def test_no_rules_includes_everything() -> None:
    assert FilterRules().included("a/b", False)


def test_first_match_wins() -> None:
    r = FilterRules((("include", "keep.log"), ("exclude", "*.log")))
    assert r.included("keep.log", False)
    assert not r.included("other.log", False)
    assert not r.included("deep/keep2.log", False)
    r2 = FilterRules((("exclude", "*.log"), ("include", "keep.log")))
    assert not r2.included("keep.log", False)


def test_anchoring_and_directories() -> None:
    r = FilterRules((("exclude", "/build"), ("exclude", "cache/"), ("exclude", "logs/*.gz")))
    assert not r.included("build", True)
    assert r.included("src/build", True)  # anchored at the top
    assert not r.included("a/cache", True)  # dir-only pattern
    assert r.included("a/cache", False)
    assert not r.included("logs/x.gz", False)
    assert r.included("x/logs/x.gz", False)


def test_double_star() -> None:
    r = FilterRules((("include", "src/**/*.py"), ("exclude", "*")))
    assert r.included("src/a/b/c.py", False)
    assert not r.included("src/a/b/c.txt", False)


@pytest.mark.parametrize("bad", ["!negated", "# comment"])
def test_bad_patterns_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        FilterRules((("exclude", bad),))
