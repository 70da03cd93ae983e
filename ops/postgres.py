"""PostgreSQL administration for the team stack: is the server there, create and drop the
stack's databases (psycopg2, as MLflow's server uses)."""

from __future__ import annotations

import urllib.parse

import psycopg2


def postgres_reachable(server_url: str) -> bool:
    """True when the PostgreSQL server at `server_url` accepts a connection within 3 s."""
    try:
        psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def create_database(server_url: str, name: str) -> None:
    """Creates database `name` on the server unless it exists."""
    connection = psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def drop_database(server_url: str, name: str) -> None:
    """Drops database `name` (closing its connections) if it exists."""
    connection = psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def _dsn(server_url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, f"/{database}", parts.query, ""))

