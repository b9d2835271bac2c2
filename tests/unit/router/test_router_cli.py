from __future__ import annotations

import pytest

from kvmesh.cli import main
from kvmesh.router.cli import build_config
from kvmesh.router.config import BackendSpec


@pytest.mark.parametrize(("argv", "flag"), [
    (["router", "--backend", "foo"], "--backend"),
    (["router", "--backend", "http://h:1", "--port", "70000"], "--port"),
    (["router", "--backend", "http://h:1", "--routing-strategy", "random"], "--routing-strategy"),
    (["router", "--backend", "http://h:1", "--read-timeout", "soon"], "--read-timeout"),
    (["router", "--backend", "http://h:1", "--load-factor", "0.5"], "--load-factor"),
    (["bench", "router", "--concurrency", "0"], "--concurrency"),
])
def test_bad_flags_print_one_line_naming_the_flag(argv: list[str], flag: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and flag in err


def test_config_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["router", "--routing-strategy", "kvaware", "--backend", "http://h:1"])
    err = capsys.readouterr().err
    assert err == "kvmesh router: error: --routing-strategy kvaware needs --model-dir (tokenizer and chat template)\n"


def test_flags_build_the_config() -> None:
    from kvmesh.cli import build_parser

    args = build_parser().parse_args([
        "router", "--backend", "http://a:1#events=tcp://a:2", "--backend", "http://b:1",
        "--routing-strategy", "session", "--session-key", "user", "--read-timeout", "500ms", "--port", "0"])
    cfg = build_config(args)
    assert cfg.backends == (BackendSpec("http://a:1", "tcp://a:2"), BackendSpec("http://b:1"))
    assert (cfg.strategy, cfg.session_key, cfg.read_timeout_s, cfg.port) == ("session", "user", 0.5, 0)
