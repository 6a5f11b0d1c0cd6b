"""Prefect's SQLite transactions against a reader's stale snapshot (flows.runtime.sqlite_writes):
a request that read, then writes after another request committed, fails at once as DEFERRED
("database is locked", what worker heartbeats met on `foldflow server`), and waits its turn as
IMMEDIATE. Real Prefect database configuration, real SQLite file, no server."""

import asyncio

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration

from flows.runtime.sqlite_writes import begin_writes_immediately


async def heartbeat_beside_a_write(path) -> list[str]:
    """A heartbeat that reads, then writes while another request writes: each one's outcome."""
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
    engine = await config.engine()
    async with engine.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE beat (name TEXT)"))
    first, second = await config.session(engine), await config.session(engine)
    read = asyncio.Event()

    async def heartbeat():  # reads its work pool, then writes, as worker_heartbeat does
        async with config.begin_transaction(first):
            await first.execute(sa.text("SELECT count(*) FROM beat"))
            read.set()
            await asyncio.sleep(0.3)  # the other request commits meanwhile, if it may
            await first.execute(sa.text("INSERT INTO beat VALUES ('heartbeat')"))

    async def other_write():
        await read.wait()
        async with config.begin_transaction(second):
            await second.execute(sa.text("INSERT INTO beat VALUES ('flow run')"))

    outcomes = await asyncio.gather(heartbeat(), other_write(), return_exceptions=True)
    await engine.dispose()
    return ["locked" if "database is locked" in str(o) else repr(o) for o in outcomes]


@pytest.mark.parametrize("immediate", [False, True])
def test_a_write_after_a_read_fails_deferred_and_waits_its_turn_immediate(
    tmp_path, monkeypatch, immediate
):
    # the class attribute comes back after the test, whatever begin_writes_immediately set
    current = AioSqliteConfiguration.begin_transaction
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", current)
    if immediate:
        begin_writes_immediately()
        wrapper = AioSqliteConfiguration.begin_transaction
        begin_writes_immediately()  # a second call wraps nothing twice
        assert AioSqliteConfiguration.begin_transaction is wrapper
    outcomes = asyncio.run(heartbeat_beside_a_write(tmp_path / "prefect.db"))
    assert outcomes == (["None", "None"] if immediate else ["locked", "None"])
