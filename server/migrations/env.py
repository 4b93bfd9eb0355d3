"""Alembic environment for the HelloWord store.

Online, the migrations run on the connection that :meth:`server.store.Store.open` passes in
``config.attributes["connection"]`` (inside its transaction); there is no alembic.ini.
Offline (``--sql``), SQL is rendered for the URL in the ``sqlalchemy.url`` main option, e.g. to
hand a PostgreSQL DBA a script.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from server.store import METADATA

config = context.config


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "offline migrations need the sqlalchemy.url main option (the target database URL)"
        )
    context.configure(url=url, target_metadata=METADATA, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the HelloWord migrations run from server.store.Store.open(), which passes a "
            'connection in config.attributes["connection"]; open the store instead'
        )
    context.configure(connection=connection, target_metadata=METADATA)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
