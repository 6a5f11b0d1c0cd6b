"""`foldflow server`'s port check: in use means something listens, not a closed connection."""

import socket

from flows.stack import port_is_free


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
