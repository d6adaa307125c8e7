"""The CQL that creates the keyspace and tables of the Cassandra token store.

The layout is the original sylk-pushserver's, so that both servers (and
SylkServer, and OpenSIPS reading ``mobile_devices``) can share one cluster.
resources/cassandra-schema.cql is this CQL for the default names; print it
for the names in general.ini's [Cassandra] section with

    python3 -m sylkpush.tokens.cassandra_schema --keyspace NAME --table NAME | cqlsh HOST

The daemon never creates a keyspace or a table by itself.
"""

import argparse
import re
import sys
from typing import List, Optional, Sequence

DEFAULT_KEYSPACE = "sylk_pushserver"
DEFAULT_TABLE = "push_tokens"
# OpenSIPS looks this one up by name: it is not configurable.
DEVICES_TABLE = "mobile_devices"

# CQL's unquoted identifiers; they are case-insensitive (stored lower case).
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_SCHEMA = """\
-- Sylk Pushserver: token storage in Apache Cassandra for the v2 API.
--
-- The keyspace and tables of the original sylk-pushserver, so that both
-- servers, SylkServer and OpenSIPS can share them.  Load it with
--     cqlsh HOST -f cassandra-schema.cql
-- For other names than {keyspace} and {table} (general.ini, section
-- [Cassandra], keys keyspace and table) print it with
--     python3 -m sylkpush.tokens.cassandra_schema --keyspace NAME --table NAME
-- The daemon never creates the keyspace or the tables itself.

-- One replica, as the original's setup tool made it.  A cluster of several
-- nodes wants more, per datacenter, e.g.
--     {{'class': 'NetworkTopologyStrategy', 'dc1': 3}}
CREATE KEYSPACE IF NOT EXISTS {keyspace}
    WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}};

-- One row per device.  The devices of an account "username@domain" share a
-- partition; a device is known by its device_id and app_id.  silent holds
-- the text "1" or "0".  An Apple token given as "A-B" is stored as
-- device_token A and background_token B (null when there is no "-").
CREATE TABLE IF NOT EXISTS {keyspace}.{table} (
    username text,
    domain text,
    device_id text,
    app_id text,
    device_token text,
    background_token text,
    platform text,
    silent text,
    user_agent text,
    PRIMARY KEY ((username, domain), device_id, app_id)
);

-- A row (opensipsval "1") for each account "username@domain" that has at
-- least one device, so that OpenSIPS knows whether to push before a call.
CREATE TABLE IF NOT EXISTS {keyspace}.{devices} (
    opensipskey text PRIMARY KEY,
    opensipsval text
);
"""


def check_identifier(name: str, what: str) -> str:
    """``name`` when CQL takes it unquoted; ValueError naming ``what`` otherwise."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} must be a letter followed by letters, digits or '_'")
    return name


def schema_cql(keyspace: str = DEFAULT_KEYSPACE, table: str = DEFAULT_TABLE) -> str:
    """The commented CQL script for ``keyspace`` and the token ``table``."""
    return _SCHEMA.format(keyspace=check_identifier(keyspace, "keyspace"),
                          table=check_identifier(table, "table"), devices=DEVICES_TABLE)


def schema_statements(keyspace: str = DEFAULT_KEYSPACE, table: str = DEFAULT_TABLE) -> List[str]:
    """The statements of ``schema_cql``, one string each, for a driver."""
    code = "\n".join(line for line in schema_cql(keyspace, table).splitlines()
                     if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m sylkpush.tokens.cassandra_schema",
        description="Print the CQL that creates the Cassandra keyspace and tables of the token store.")
    parser.add_argument("--keyspace", default=DEFAULT_KEYSPACE,
                        help="general.ini [Cassandra] keyspace (default: %(default)s)")
    parser.add_argument("--table", default=DEFAULT_TABLE,
                        help="general.ini [Cassandra] table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(schema_cql(args.keyspace, args.table))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
