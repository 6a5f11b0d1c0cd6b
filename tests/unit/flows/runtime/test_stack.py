"""`foldflow server`'s checks: in use means something listens, not a closed connection; a
database it cannot use stops it with one line before anything starts."""

import socket

from flows.runtime.stack import port_is_free


def test_a_listening_port_is_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not port_is_free("127.0.0.1", listener.getsockname()[1])


def test_a_port_whose_server_just_stopped_is_free_despite_time_wait():
    """A stopped server's closed connections sit in TIME_WAIT for a minute; a restart may bind."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the connection is in TIME_WAIT
    client.close()
    listener.close()
    assert port_is_free("127.0.0.1", port)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe closes


def test_server_with_an_unreachable_database_stops_with_one_line_naming_host_and_port(capsys):
    from flows.cli import run

    db_port, api_port = closed_port(), closed_port()
    url = f"postgresql+asyncpg://prefect:secret@127.0.0.1:{db_port}/prefect"
    status = run(["server", "--port", str(api_port), "--database-url", url])
    err = capsys.readouterr().err
    assert status == 1
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(
        f"foldflow server: cannot reach PostgreSQL at 127.0.0.1:{db_port} (database 'prefect'): "
    )
    assert "secret" not in err and "Traceback" not in err


def test_server_takes_prefects_own_database_variable_and_asks_for_asyncpg(monkeypatch, capsys):
    from flows.cli import run

    url = f"postgresql://prefect@127.0.0.1:{closed_port()}/prefect"
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", url)
    assert run(["server", "--port", str(closed_port())]) == 1
    assert "needs the asyncpg driver" in capsys.readouterr().err


def test_the_database_url_reaches_the_server_under_both_of_prefects_names():
    from flows.runtime.stack import DATABASE_URL_VARIABLES, configured_database_url, with_database

    url = "postgresql+asyncpg://prefect@db:5432/prefect"
    assert configured_database_url(None, {"PREFECT_API_DATABASE_CONNECTION_URL": url}) == url
    assert configured_database_url("sqlite+aiosqlite:///x.db", {DATABASE_URL_VARIABLES[0]: url})
    assert configured_database_url(None, {}) is None
    environment = with_database({"PREFECT_HOME": "/h"}, url)
    assert [environment[name] for name in DATABASE_URL_VARIABLES] == [url, url]


def test_the_server_makes_an_auth_string_kept_for_its_user_alone(tmp_path):
    from flows.runtime.stack import stack_auth_string

    environment = {"PREFECT_HOME": str(tmp_path / "home")}
    auth_string, auth_file = stack_auth_string(None, False, environment)
    assert auth_file == tmp_path / "home" / "foldflow-server-auth"
    assert auth_file.stat().st_mode & 0o777 == 0o600
    user, _, password = auth_string.partition(":")
    assert user == "foldflow" and len(password) >= 32
    assert stack_auth_string(None, False, environment) == (auth_string, auth_file)  # kept
    assert stack_auth_string("me:given", False, environment) == ("me:given", None)
    assert stack_auth_string(None, True, environment) == (None, None)


def test_an_auth_file_others_could_read_or_a_link_is_replaced(tmp_path):
    from flows.runtime.stack import server_auth_string

    auth_file = tmp_path / "foldflow-server-auth"
    auth_file.write_text("foldflow:leaked\n")
    auth_file.chmod(0o644)
    auth_string, new = server_auth_string(auth_file)
    assert new and auth_string != "foldflow:leaked"
    assert auth_file.stat().st_mode & 0o777 == 0o600
    auth_file.unlink()
    elsewhere = tmp_path / "planted"
    elsewhere.write_text("foldflow:planted\n")
    elsewhere.chmod(0o600)
    auth_file.symlink_to(elsewhere)
    assert server_auth_string(auth_file)[0] != "foldflow:planted"
    assert not auth_file.is_symlink()


def test_no_auth_beyond_loopback_is_refused_in_one_line_with_status_2(capsys):
    from flows.cli import run

    status = run(["server", "--host", "0.0.0.0", "--no-auth", "--port", str(closed_port())])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("foldflow server: --no-auth on --host 0.0.0.0 would let")


def test_the_banner_names_the_host_bound_and_how_clients_pass_the_auth_string(tmp_path):
    from flows.runtime.stack import banner_lines

    auth_file = tmp_path / "foldflow-server-auth"
    api = "http://127.0.0.1:4200/api"
    lines = "\n".join(banner_lines("0.0.0.0", 4200, api, "pool", auth_file, True))
    assert "bound to 0.0.0.0:4200" in lines
    assert f'PREFECT_API_AUTH_STRING="$(cat {auth_file})" PREFECT_API_URL={api}' in lines
    lines = "\n".join(banner_lines("10.1.2.3", 4200, "http://10.1.2.3:4200/api", "p", None, True))
    assert "Prefect UI: http://10.1.2.3:4200" in lines
    assert "127.0.0.1" not in lines


def test_the_worker_gets_the_allowed_model_folders(tmp_path):
    from flows.runtime.stack import PROJECT_ROOT, stack_environment

    environment = stack_environment("127.0.0.1", 4200, "a:b", base={})
    assert environment["FOLDFLOW_ALLOWED_MODELS"] == str(PROJECT_ROOT)
    assert environment["PREFECT_API_AUTH_STRING"] == "a:b"
    chosen = stack_environment("127.0.0.1", 1, None, base={}, allowed_models=[tmp_path, tmp_path])
    assert chosen["FOLDFLOW_ALLOWED_MODELS"] == f"{tmp_path}:{tmp_path}"
