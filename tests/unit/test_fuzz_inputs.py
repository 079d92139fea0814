"""Property-based fuzzing of what people and config files send: the query parser, the config loader, the
secret redaction of --check-config and the token check answer every input, never crash, never leak."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel_sim.config import ChannelSimConfig
from rxd.config import RxdConfig
from rxd.retrieval.parse import parse_query
from semcom.auth import TokenSet, hash_token, redacted
from semcom.config import ConfigError, TokenEntry, load_config
from semcom.schema import SchemaRegistry
from txd.config import TxdConfig

SCHEMA = SchemaRegistry.builtin().get("person/1")
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
WORDS = st.sampled_from(
    ["man", "woman", "red", "blue", "white", "shirt", "long", "short", "sleeved", "black", "not", "or",
     "and", "trousers", "shoes", "teal", "dress", "jeans", ",", "-", "no", "with", "in", "a", "\u00e9"]
)  # fmt: skip


@FUZZ
@given(st.one_of(st.text(max_size=2000), st.lists(WORDS, max_size=60).map(" ".join)))
def test_query_parser_answers_any_text_fast(text: str) -> None:
    start = time.perf_counter()
    parsed = parse_query(text, SCHEMA)
    assert time.perf_counter() - start < 1.0
    for name, values in parsed.slots.items():
        spec = SCHEMA.field(name)
        assert values and all(v in spec.values for v in values)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
)
KEYS = st.sampled_from(
    ["server.listen", "server.grace_s", "server.tls.cert", "server.tls.client_ca", "server.reflection",
     "query.max_text_chars", "query.timeout_s", "query.workers", "http.max_body_bytes", "http.tls.key",
     "link.upstream", "link.tls.enabled", "ingest.max_uploads", "auth.tokens", "auth.tokens_file",
     "transmitter.auth.token", "channel.pace_airtime", "channel.models", "sources", "nope.nothing", "server"]
)  # fmt: skip


@FUZZ
@given(
    st.sampled_from([RxdConfig, TxdConfig, ChannelSimConfig]),
    st.lists(st.tuples(KEYS, SCALARS), max_size=4),
)
def test_config_loader_answers_any_override(
    model: type[RxdConfig] | type[TxdConfig] | type[ChannelSimConfig], items: list[tuple[str, object]]
) -> None:
    overrides = [f"{k}={v}" for k, v in items]
    try:
        load_config(model, overrides=overrides)
    except ConfigError as err:
        assert err.errors and all(isinstance(e, str) for e in err.errors)


@settings(max_examples=100, deadline=2000)
@given(st.text(max_size=500))
def test_config_loader_answers_any_toml_text(text: str) -> None:
    path = Path("/tmp") / f"semcom-fuzz-{abs(hash(text))}.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(RxdConfig, path=path)
    except ConfigError as err:
        assert err.errors
    finally:
        path.unlink(missing_ok=True)


@FUZZ
@given(
    user=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12),
    password=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=6, max_size=24),
    token=st.text(min_size=1, max_size=40),
)
def test_redaction_hides_url_passwords_and_tokens(user: str, password: str, token: str) -> None:
    tree = {
        "sources": [{"url": f"rtsp://{user}:{password}@192.0.2.1:554/s"}],
        "auth": {"tokens": [{"name": "ops", "scope": "admin", "sha256": hash_token(token)}]},
        "transmitter": {"auth": {"token": token, "token_file": "/etc/t"}},
    }
    shown = str(redacted(tree))
    assert f":{password}@" not in shown and hash_token(token) not in shown
    assert f"'token': {token!r}" not in shown and "/etc/t" in shown


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=200)), st.sampled_from([None, "read", "admin"]))
def test_token_check_answers_any_header(header: str | None, needed: str | None) -> None:
    good = "the-admin-token"
    tokens = TokenSet((TokenEntry(name="ops", scope="admin", sha256=hash_token(good)),))
    ok, why = tokens.allows(header, needed)  # type: ignore[arg-type]
    assert ok == (needed is None or header == f"Bearer {good}") or (
        header is not None and header.startswith("Bearer ") and header[7:].strip() == good
    )
    assert ok or why
