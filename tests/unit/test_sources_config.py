"""Source configuration: which URLs are accepted, what each kind of source is opened with, clear errors."""

from __future__ import annotations

import pytest

from semcom.config import ConfigError, load_config
from txd.config import SourceConfig, TxdConfig


def _txd(*sources: str) -> TxdConfig:
    return load_config(TxdConfig, overrides=["sources=[" + ",".join(sources) + "]"])


def test_every_supported_kind_is_accepted() -> None:
    cfg = _txd(
        '{"stream_id": "cam1", "url": "rtsp://admin:pw@10.0.0.5:554/stream1"}',
        '{"stream_id": "cam2", "url": "rtsps://10.0.0.6/live", "live": false}',
        '{"stream_id": "web", "url": "https://example.org/v.mp4", "loop": true}',
        '{"stream_id": "f1", "url": "/var/video/a%20b.mp4"}',
        '{"stream_id": "f2", "url": "file:///var/video/a%20b.mp4", "record": false}',
    )
    cam1, cam2, web, f1, f2 = cfg.sources
    assert [s.kind for s in cfg.sources] == ["rtsp", "rtsp", "http", "file", "file"]
    assert [s.is_live for s in cfg.sources] == [True, False, False, False, False]
    # rtsp over TCP with a socket timeout in microseconds, so that a dead camera fails instead of hanging.
    assert cam1.ffmpeg_options() == {"timeout": "10000000", "rtsp_transport": "tcp"}
    assert web.ffmpeg_options() == {"rw_timeout": "10000000"}
    assert f1.ffmpeg_options() == {}
    assert f1.target == "/var/video/a%20b.mp4" and f2.target == "/var/video/a b.mp4"
    assert cam1.target == cam1.url and cam1.display_url == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert cam2.display_url == cam2.url and web.loop and not f2.record


def test_configured_options_win() -> None:
    src = SourceConfig(
        stream_id="cam", url="rtsp://10.0.0.5/s", options={"rtsp_transport": "udp"}, read_timeout_s=2.5
    )
    assert src.ffmpeg_options() == {"timeout": "2500000", "rtsp_transport": "udp"}


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ('{"stream_id": "x", "url": "ftp://host/v.mp4"}', "scheme 'ftp' is not supported"),
        ('{"stream_id": "x", "url": "rtsp:///nohost"}', "has no host"),
        ('{"stream_id": "x", "url": ""}', "sources.0.url"),
        ('{"stream_id": "../x", "url": "/v.mp4"}', "sources.0.stream_id"),
        ('{"stream_id": "x", "url": "/v.mp4", "colour": "red"}', "sources.0.colour"),
        ('{"stream_id": "x", "url": "/v.mp4", "retry_s": 0}', "sources.0.retry_s"),
    ],
)
def test_bad_sources_are_reported_by_key(source: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _txd(source)
    assert needle in str(info.value)


def test_stream_ids_are_unique() -> None:
    with pytest.raises(ConfigError, match="stream_id 'cam' is used twice"):
        _txd('{"stream_id": "cam", "url": "/a.mp4"}', '{"stream_id": "cam", "url": "/b.mp4"}')
