"""The supervisor's CLI (status, ps, logs, events, scale, deploy, promote, rollback, restart, down) where no
supervised application is needed: usage errors, no agent, an agent without an application, and how
the agent address is picked. The end-to-end behaviour is in the supervisor's own tests."""
import json
import os
import subprocess
import tempfile

import pytest

from conftest import BIN, free_port

COMMANDS = ["status", "ps", "logs", "events", "scale", "deploy", "promote", "rollback", "restart", "down"]


@pytest.fixture
def workdir():
    """An empty working directory: no ./flotilla.yaml to pick an agent from."""
    with tempfile.TemporaryDirectory(prefix="flotilla-cli-") as d:
        yield d


def run(*args, cwd, api=None, timeout=30):
    env = {k: v for k, v in os.environ.items() if k not in ("FLOTILLA_API", "FLOTILLA_TOKEN")}
    if api:
        env["FLOTILLA_API"] = api
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_error(r, command):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flotilla {command}: "), r.stderr
    return lines[0]


def test_every_command_has_help_with_an_example(workdir):
    top = run("--help", cwd=workdir)
    assert top.returncode == 0 and "supervisor" in top.stdout
    for command in COMMANDS:
        assert command in top.stdout
        r = run(command, "--help", cwd=workdir)
        assert r.returncode == 0, (command, r.stderr)
        assert "Example: flotilla " in r.stdout and "flotilla " + command + " " in r.stdout, (command, r.stdout)
        assert "--api" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["scale", "web=abc"], "\"abc\" is not a number of instances"),
    (["scale", "web=-1"], "is not a number of instances"),
    (["scale"], "usage: flotilla scale SERVICE=N"),
    (["scale", "web"], "\"web\" is not SERVICE=N"),
    (["scale", "=3"], "names no service"),
    (["scale", "web", "x"], "\"x\" is not a number of instances"),
    (["logs", "web", "--since", "yesterday"], "--since \"yesterday\" is not a duration"),
    (["logs", "web", "--since", "2026-12-02T08:00:00+5"], "unreadable time zone"),
    (["logs", "web", "--tail", "ten"], "--tail \"ten\" is not a number of lines"),
    (["deploy"], "which service?"),
    (["deploy", "web", "--set", "LOG_LEVEL"], "--set \"LOG_LEVEL\" is not KEY=VALUE"),
    (["deploy", "web", "--canary", "100"], "a percentage from 1 to 99"),
    (["deploy", "web", "--canary", "ten"], "a percentage from 1 to 99"),
    (["deploy", "web", "--wait", "--timeout", "5"], "--timeout \"5\" is not a duration"),
    (["promote"], "which service?"),
    (["rollback"], "which service?"),
    (["restart", "web", "--timeout", "soon"], "--timeout \"soon\" is not a duration"),
])
def test_usage_errors_exit_2_with_one_line(workdir, args, needle):
    # No agent runs at the address: the command line is judged before anything is sent.
    r = run(*args, cwd=workdir, api=f"127.0.0.1:{free_port()}")
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert needle in one_line_error(r, args[0]), r.stderr
    assert r.stdout == ""


def test_unknown_options_and_extra_arguments_are_usage_errors(workdir):
    for args in (["status", "--bogus"], ["logs", "web", "--bogus"], ["events", "--service"]):
        r = run(*args, cwd=workdir)
        assert r.returncode == 2, (args, r.stderr)


def test_down_without_an_agent_has_nothing_to_stop(workdir):
    # As `docker compose down`: stopping what is not running succeeds, so `down; up -d` scripts work.
    port = free_port()
    r = run("down", "--api", f"127.0.0.1:{port}", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"nothing to stop: no agent at 127.0.0.1:{port}\n" and r.stderr == ""


def test_no_agent_is_one_line_and_exit_1(workdir):
    api = f"127.0.0.1:{free_port()}"
    for args in (["status"], ["ps"], ["logs", "web"], ["events"], ["scale", "web=2"], ["deploy", "web"],
                 ["promote", "web"], ["rollback", "web"], ["restart", "web"], ["restart"]):
        r = run(*args, cwd=workdir, api=api)
        assert r.returncode == 1, (args, r.stderr)
        assert "cannot reach the flotilla agent at " + api in one_line_error(r, args[0])


def test_a_plain_agent_runs_no_application(agent, workdir):
    message = "this agent runs no application (started with flotilla agent, not flotilla up)"
    for args in (["status"], ["status", "--json"], ["ps"], ["ps", "web"], ["logs", "web"], ["logs", "-f", "web"],
                 ["events"], ["events", "-f"], ["scale", "web=2"], ["deploy", "web", "--set", "environment.A=1"],
                 ["promote", "web"], ["rollback", "web"], ["restart", "web"], ["restart"]):
        r = run(*args, cwd=workdir, api=agent.addr, timeout=10)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert message in one_line_error(r, args[0]), (args, r.stderr)
    r = run("down", cwd=workdir, api=agent.addr)
    assert r.returncode == 1 and "runs no application" in one_line_error(r, "down")
    # `down` does not stop an agent it cannot stop cleanly: it is still there.
    assert agent.request("GET", "/v1/status/leader")[0] == 200


def test_the_agent_address_comes_from_api_file_env_then_local_file(agent, workdir, tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    app = tmp_path / "app.yaml"
    app.write_text(f"name: shop\nagent:\n  api: {agent.addr}\n")
    # -f/--file FILE: its agent.api (the plain agent answers: it was reached).
    for args in (["status", "-f", str(app)], ["ps", "--file", str(app)], ["logs", "web", "--file", str(app)],
                 ["events", "--file", str(app)], ["down", "-f", str(app)]):
        r = run(*args, cwd=workdir, api=dead)
        assert "runs no application" in r.stderr, (args, r.stderr)
    # --api wins over the file.
    r = run("status", "-f", str(app), "--api", dead, cwd=workdir)
    assert "cannot reach the flotilla agent at " + dead in r.stderr
    # ./flotilla.yaml is used when nothing else names an agent …
    (tmp_path / "flotilla.yaml").write_text(f"name: shop\nagent:\n  api: {agent.addr}\n")
    r = run("status", cwd=str(tmp_path))
    assert "runs no application" in r.stderr, r.stderr
    # … also from a directory below it (the nearest flotilla.yaml up the tree, as compose does) …
    deeper = tmp_path / "src" / "web"
    deeper.mkdir(parents=True)
    r = run("status", cwd=str(deeper))
    assert "runs no application" in r.stderr, r.stderr
    r = run("config", "check", cwd=str(deeper))
    assert r.returncode == 0 and r.stdout.startswith(str(tmp_path / "flotilla.yaml") + ": ok"), r.stdout + r.stderr
    # … after $FLOTILLA_API.
    r = run("status", cwd=str(tmp_path), api=dead)
    assert "cannot reach the flotilla agent at " + dead in r.stderr
    # A --file that does not load is a usage error naming it.
    r = run("status", "-f", str(tmp_path / "missing.yaml"), cwd=workdir)
    assert r.returncode == 2 and "missing.yaml" in one_line_error(r, "status")
    # The registry's commands pick their agent the same way: ./flotilla.yaml here, then -f.
    status, _, _ = agent.request("PUT", "/v1/kv/picked/by", b"file")
    assert status == 200
    r = run("kv", "get", "picked/by", cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout == "file\n", r.stderr
    r = run("services", "--json", cwd=str(tmp_path))
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list), r.stderr
    for args in (["kv", "get", "picked/by", "-f", str(app)], ["kv", "-f", str(app), "get", "picked/by"],
                 ["services", "--file", str(app)]):
        r = run(*args, cwd=workdir, api=dead)
        assert r.returncode == 0, (args, r.stderr)
    r = run("kv", "get", "picked/by", "-f", str(tmp_path / "missing.yaml"), cwd=workdir)
    assert r.returncode == 2 and "missing.yaml" in one_line_error(r, "kv")
    # A broken flotilla.yaml here is an error, not a silent fall-back to 127.0.0.1:7700 (which
    # may be another application's agent).
    (tmp_path / "flotilla.yaml").write_text("name: [\n")
    for args in (["status"], ["down"], ["logs"]):
        r = run(*args, cwd=str(tmp_path))
        assert r.returncode == 2 and "flotilla.yaml:" in r.stderr and "--api" in r.stderr, (args, r.stderr)
    assert run("status", "--api", agent.addr, cwd=str(tmp_path)).returncode == 1  # --api still works
