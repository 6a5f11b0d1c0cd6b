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
