"""The `khazana` command line: keygen, init, and start up to the node runtime (faked here)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import pytest

from ledger.crypto import read_key_file
from node import cli
from node.config import NodeConfig
from node.home import acquire_home_lock


@pytest.fixture(autouse=True)
def restore_logging():
    """`start` configures the root logger: put it back for the rest of the suite."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_keygen_prints_the_address_of_the_key_it_wrote(tmp_path, capsys):
    out = tmp_path / "k.json"
    assert cli.main(["keygen", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == read_key_file(out).address_text
    before = out.read_bytes()
    assert cli.main(["keygen", "--out", str(out)]) == 1  # never overwrites a key
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_init_prints_the_network_and_refuses_a_second_time(tmp_path, capsys):
    home = tmp_path / "net"
    args = ["init", "--home", str(home), "--validators", "4", "--observers", "1"]
    assert cli.main([*args, "--chain-id", "kz-cli", "--base-port", "34000"]) == 0
    out = capsys.readouterr().out
    assert "network kz-cli" in out
    assert "observer-1" in out and "http://127.0.0.1:34013" in out
    assert NodeConfig.load(home / "auditor").chain_id == "kz-cli"
    assert cli.main(args) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--force", "--chain-id", "kz-2"]) == 0
    assert NodeConfig.load(home / "auditor").chain_id == "kz-2"


def test_init_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["init", "--home", str(tmp_path)])  # --validators is required
    assert info.value.code == 2


@pytest.fixture
def home(tmp_path):
    assert cli.main(["init", "--home", str(tmp_path / "net"), "--validators", "4"]) == 0
    return tmp_path / "net" / "regulator"


@pytest.fixture
def fake_app(monkeypatch):
    """Install a fake `node.app` whose run_node records what it was given."""
    calls = []

    def install(run_node):
        module = types.ModuleType("node.app")
        module.run_node = run_node
        monkeypatch.setitem(sys.modules, "node.app", module)
        return calls

    return install, calls


def test_start_runs_an_async_run_node_with_the_checked_config(home, fake_app):
    install, calls = fake_app

    async def run_node(config: NodeConfig) -> None:
        import trio

        await trio.sleep(0)
        # the home is locked while the node runs (a second start would be refused)
        calls.append((config, (home / "node.pid").read_text()))

    install(run_node=run_node)
    assert cli.main(["start", "--home", str(home)]) == 0
    ((config, pid_text),) = calls
    assert config.name == "regulator" and config.home == home
    assert pid_text == f"{os.getpid()}\n"
    acquire_home_lock(home).release()  # released after the node stopped


def test_start_refusals_exit_1_before_the_runtime(home, fake_app, capsys):
    install, calls = fake_app
    install(run_node=lambda config: calls.append(config))
    config = home / "config.toml"
    config.write_text(config.read_text().replace('role = "validator"', 'role = "leader"'))
    assert cli.main(["start", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "refusing to start" in err and "role" in err and "leader" in err
    assert cli.main(["start", "--home", str(home.parent / "absent")]) == 1
    assert "cannot read the config file" in capsys.readouterr().err
    assert calls == []


def test_start_refuses_while_the_home_is_locked(home, fake_app, capsys):
    install, calls = fake_app
    install(run_node=lambda config: calls.append(config))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl,sys; f=open({str(home / 'node.pid')!r},'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('x', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"x\n"
        assert cli.main(["start", "--home", str(home)]) == 1
        assert "already running" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert calls == []


def test_python_dash_m_node_is_the_same_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "node", "start", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "config.toml" in result.stderr
