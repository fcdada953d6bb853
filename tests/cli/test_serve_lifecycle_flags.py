"""``tabserve serve`` flags for registry models, several models, polling and traffic policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tabserve.cli import build_parser
from tabserve.cli.serve import settings_from_args
from tabserve.errors import ConfigError


def _settings(*argv: str):
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_a_registry_uri_is_the_model_uri_and_policies_key_on_its_registered_name():
    s = _settings("models:/credit@champion", "--ab", "challenger=10", "--ab", "7=5", "--shadow", "challenger",
                  "--sticky-header", "X-User", "--poll-interval-s", "2")
    assert s.model_uri == "models:/credit@champion" and s.model_path is None
    assert s.resolved_model_uri == "models:/credit@champion"
    assert s.poll_interval_s == 2.0
    assert s.traffic == {"credit": {"variants": {"challenger": 10.0, "7": 5.0}, "shadow": "challenger",
                                    "sticky_header": "X-User"}}


def test_more_models_by_name_and_a_local_default_named_by_its_bundle(demo_bundle: Path):
    s = _settings(str(demo_bundle), "--model", "fraud=models:/fraud/3", "--model", "iris=/srv/iris",
                  "--shadow", "2")
    assert s.model_path == demo_bundle and s.model_uri is None
    assert s.models == {"fraud": "models:/fraud/3", "iris": "/srv/iris"}
    assert s.traffic == {"demo": {"variants": {}, "shadow": "2"}}
    # the environment the uvicorn workers rebuild their settings from carries the same, as JSON
    env = s.to_env()
    assert env["TABSERVE_MODELS"] == '{"fraud": "models:/fraud/3", "iris": "/srv/iris"}'


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "fraud"], "--model 'fraud': expected NAME=URI"),
    (["--ab", "challenger"], "--ab 'challenger': expected LABEL=WEIGHT"),
    (["--ab", "challenger=ten"], "--ab weight 'ten' is not a number"),
])
def test_malformed_flags_say_what_form_is_expected(argv, message):
    with pytest.raises(ConfigError, match=message):
        _settings("models:/credit@champion", *argv)


def test_hardening_flags_reach_the_settings_and_the_workers_environment():
    s = _settings("models:/credit@champion", "--admin-routes", "on", "--trusted-proxies", "10.0.0.1, 10.1.0.0/16",
                  "--model-roots", "/srv/models", "--registry-timeout-s", "3", "--max-inflight-body-bytes", "1000000",
                  "--max-header-bytes", "8192", "--header-timeout-s", "2", "--body-timeout-s", "4")
    assert (s.admin_routes, s.trusted_proxies, s.model_roots) == ("on", ["10.0.0.1", "10.1.0.0/16"], ["/srv/models"])
    assert (s.registry_timeout_s, s.max_inflight_body_bytes) == (3.0, 1_000_000)
    assert (s.max_header_bytes, s.header_timeout_s, s.body_timeout_s) == (8192, 2.0, 4.0)
    env = s.to_env()
    assert env["TABSERVE_ADMIN_ROUTES"] == "on" and env["TABSERVE_TRUSTED_PROXIES"] == '["10.0.0.1", "10.1.0.0/16"]'
    assert env["TABSERVE_MAX_INFLIGHT_BODY_BYTES"] == "1000000"


def test_a_port_in_use_stops_serve_at_once_in_one_line(demo_bundle: Path, tmp_path: Path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "tabserve", "serve", str(demo_bundle), "--port", str(port)],
                              env={**os.environ, "TABSERVE_HOME": str(tmp_path)}, capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"tabserve serve: error: port {port} on 127.0.0.1 is in use by another "
                                   "process; stop it or choose another port (--port)")
