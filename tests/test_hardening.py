"""Issue #19 fixes kept fixed: credentials out of URIs, bounded suite settings, and config
parsing that either succeeds or says what is wrong (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentic.cli import _parse_config
from agentic.core import ConfigError, redact_uri
from agentic.suites import load_suite


@pytest.mark.parametrize(
    ("uri", "secret"),
    [
        ("openai:http://u:KEY123@127.0.0.1:8000/v1#m", "KEY123"),
        ("openai:http://TOKEN9@127.0.0.1:8000/v1#m", "TOKEN9"),
        ("openai:http://127.0.0.1:8000/v1?api_key=KEY123#m", "KEY123"),
        ("error talking to http://127.0.0.1:1/v1?token=abc&x=1", "abc"),
    ],
)
def test_secrets_are_masked_and_the_rest_kept(uri: str, secret: str) -> None:
    shown = redact_uri(uri)
    assert secret not in shown and "***" in shown
    assert "127.0.0.1" in shown


def test_a_uri_without_secrets_is_unchanged() -> None:
    uri = "openai:http://127.0.0.1:8000/v1?stream=1#smollm2"
    assert redact_uri(uri) == uri


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"max_terms": 99999999}, "max_terms"),
        ({"max_digits": 1e400}, "max_digits"),
        ({"max_digits": 5.0}, "max_digits"),
    ],
)
def test_absurd_settings_are_refused_before_generating(config: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_suite("basic_arithmetic", n=2, config=config)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_config_parsing_succeeds_or_says_why(pairs: list[str]) -> None:
    try:
        parsed = _parse_config(pairs)
    except ConfigError as e:
        assert "KEY=VALUE" in str(e) or "nested" in str(e)
        return
    assert set(parsed) <= {p.partition("=")[0] for p in pairs}
