"""`frugal serve` as a user runs it: help, one-line errors, and a real process stopped by Ctrl-C."""

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from frugal_lm.cli import build_parser, main


def test_help_explains_the_options_and_endpoints(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in [
        "--model",
        "--host",
        "127.0.0.1",
        "--port",
        "--max-batch-size",
        "--max-queue",
        "--model-name",
        "/v1/chat/completions",
        "/v1/completions",
        "/health",
        "condition",
        "503",
        "--max-body-bytes",
        "--request-timeout",
        "--keep-alive-timeout",
        "--max-header-bytes",
        "--max-connections",
        "413",
    ]:
        assert expected in text


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "does/not/exist"], "--model does/not/exist: no such directory"),
        (["--model", ".", "--max-batch-size", "0"], "--max-batch-size must be >= 1"),
        (["--model", ".", "--max-queue", "-1"], "--max-queue must be >= 0"),
        (["--model", ".", "--port", "70000"], "--port must be in 0..65535"),
        (["--model", ".", "--max-body-bytes", "0"], "--max-body-bytes must be > 0"),
        (["--model", ".", "--request-timeout", "-1"], "--request-timeout must be > 0"),
        (["--model", ".", "--max-connections", "0"], "--max-connections must be > 0"),
    ],
)
def test_bad_arguments_give_one_line_errors(capsys, arguments, message):
    assert main(["serve", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_a_directory_without_a_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "not a model directory" in error and error.count("\n") == 1


def test_a_taken_port_is_a_one_line_error(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"127.0.0.1:{port}: address already in use" in error and error.count("\n") == 1


@pytest.mark.slow  # a fresh process imports torch: 5-20 s on the shared 2-core machine
def test_serve_answers_with_the_dtype_and_batch_asked_for_then_stops_on_ctrl_c(tiny_run):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frugal_lm",
            "serve",
            "--model",
            str(tiny_run),
            "--port",
            "0",
            "--model-name",
            "tiny",
            "--log-level",
            "warning",
            "--dtype",
            "int8",
            "--max-batch-size",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert "serving 'tiny'" in banner, process.stderr.read() if process.poll() is not None else banner
        base_url = banner.split(" on ")[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        assert "[cpu, int8, batch 2," in banner
        health = httpx.get(f"{base_url.removesuffix('/v1')}/health", timeout=30).json()
        assert (health["dtype"], health["max_batch_size"]) == ("int8", 2)
        reply = httpx.post(
            f"{base_url}/completions", json={"model": "tiny", "prompt": "1+1=", "max_tokens": 2}, timeout=30
        )
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "frugal serve: stopped" in stdout
    finally:
        process.kill()


def test_compile_flag_reaches_the_engine(tiny_run, engine_constructions, monkeypatch, capsys):
    import frugal_lm.infer.http_server as http_server

    class NoServer:
        def run(self, sockets):
            pass

    monkeypatch.setattr(http_server, "uvicorn_server", lambda *args: NoServer())
    import frugal_lm.infer.engine as engine_module

    warmed = []
    monkeypatch.setattr(engine_module.Engine, "warm_up", lambda engine: warmed.append(engine) or 0)
    for flags in (["--compile", "--warm-up"], []):
        assert main(["serve", "--model", str(tiny_run), "--port", "0", *flags]) == 0
    assert [compiled for _, compiled in engine_constructions] == [True, False]
    assert len(warmed) == 1  # --warm-up asked for it once; an eager CPU engine has nothing to warm
    assert capsys.readouterr().out.count("frugal serve: stopped") == 2


def test_limit_flags_reach_the_app_and_uvicorn(tiny_run, monkeypatch):
    import frugal_lm.infer.http_server as http_server
    import frugal_lm.infer.server as server_module
    from frugal_lm.infer.http_limits import HttpLimits

    seen = {}

    class NoServer:
        def run(self, sockets):
            pass

    def recording_server(app, sock, log_level, limits):
        seen["uvicorn"] = limits
        return NoServer()

    real_create_app = server_module.create_app

    def recording_create_app(*args, limits, **kwargs):
        seen["app"] = limits
        return real_create_app(*args, limits=limits, **kwargs)

    monkeypatch.setattr(http_server, "uvicorn_server", recording_server)
    monkeypatch.setattr(server_module, "create_app", recording_create_app)
    assert (
        main(
            [
                "serve",
                "--model",
                str(tiny_run),
                "--port",
                "0",
                "--max-body-bytes",
                "1000",
                "--request-timeout",
                "2.5",
                "--keep-alive-timeout",
                "3",
                "--max-header-bytes",
                "8192",
                "--max-connections",
                "40",
            ]
        )
        == 0
    )
    expected = HttpLimits(
        max_body_bytes=1000, request_timeout_s=2.5, keep_alive_s=3, max_header_bytes=8192, max_connections=40
    )
    assert seen["app"] == seen["uvicorn"] == expected
    assert main(["serve", "--model", str(tiny_run), "--port", "0"]) == 0
    assert seen["uvicorn"] == HttpLimits()  # the defaults are the documented ones
