"""``mlmd-cache``: a thin click shell over the library; every command maps to one library call.

The ``main`` group with its options (``--db``, ``--timeout``, ``--version``), and every command of
the command modules added to it. Building the commands imports only click and what their options
need: a command imports what it uses (ml_metadata, grpc, the KFP SDK: most of a second) when it
runs, so that ``--help`` and usage errors answer at once.
"""
from __future__ import annotations

import click

from ..terminal import escape_warnings
from . import envs, keys, leases, records, runs, serve
from .options import OneLineUsageGroup, group_db_options

__all__ = ["main"]


@click.group(cls=OneLineUsageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlmd-cache")
@group_db_options
def main() -> None:
    """KFP v2 step caching over any ML Metadata store."""
    escape_warnings()  # a warning may quote stored text (the KFP SDK's quote an importer's URI)


for command in (keys.fingerprint, keys.lookup, serve.serve, records.index, runs.run_pipeline, runs.plan, records.stats,
                records.recover, records.invalidate, leases.leases, envs.envs):
    main.add_command(command)
