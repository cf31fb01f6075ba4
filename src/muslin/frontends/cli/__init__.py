"""The ``muslin`` command: a thin, fast-starting front end with Docker's habits.

The daemon answers in muslin's model (docs/API.md); everything Docker-shaped is made here.
By job, so that most of it is testable without a daemon:

* :mod:`.commands`: the command line, declared once (parsing and ``--help``), the planners
  that turn argv into a :class:`~.commands.Plan` (the daemon requests to make plus the local
  options that shape the output; pure), and the table of what runs each command.
* :mod:`.render`: the text and JSON Docker's CLI would print (tables, ``ps``, ``network ls``,
  ``network inspect``, ``inspect``), built from the daemon's views. Pure.
* :mod:`.process`: ``run`` and ``exec``: entering the container's namespace, starting the
  command, the detached monitor, signal forwarding.
* :mod:`.fabric`: ``muslin fabric …``, which talk to the fabric's store, not to the daemon.
* here: :func:`main` / :func:`execute`, the errors and the exit codes.

Start-up matters (one process per command, and ``muslin network connect`` competes with a
CNI plugin's ADD): only os and sys are imported at module level, plus muslin.argv (the
command-line parser, which imports nothing), muslin.client (C modules only on the request
path) and muslin.errors. Not argparse, json, socket or re: each costs milliseconds of every
start. The modules above are imported by the commands that need them (``--version`` loads
neither render nor process); json, ctypes, signal, subprocess and datetime on the paths that
need them; the engine (pyroute2 …) only by ``muslin daemon``.

Error output follows Docker's CLI: one line on stderr; errors that come back from the daemon
are printed as ``Error response from daemon: <message>`` (docker CLI 28: the API client wraps
every daemon error that way, e.g. ``Error response from daemon: network foo not found`` for
``docker network rm foo``); local usage errors as ``Error: <message>``. Exit codes as
Docker's: 1 for daemon errors and missing arguments, 125 for flag errors and for ``run``
failures before the command starts, 126/127 when the command cannot be executed / is not
found, otherwise the command's own status.
"""

import os
import sys

from muslin.errors import MuslinError

DAEMON_PREFIX = "Error response from daemon: "

# Exit statuses (Docker's).
EXIT_ERROR = 1
EXIT_RUN_FAILED = 125  # docker run: the daemon or the CLI failed before the command started
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


class CliError(Exception):
    """An error to print as one line on stderr and exit with ``code``."""

    def __init__(self, text: str, code: int = EXIT_ERROR, cause: BaseException | None = None):
        super().__init__(text)
        self.text = text
        self.code = code
        self.cause = cause


class UsageError(CliError):
    """A local usage error: ``Error: <message>``.

    Docker exits 125 for flag errors (unknown flag, bad value) and 1 for a
    wrong number of arguments; ``code`` carries which.
    """

    def __init__(self, message: str, code: int = 125, prog: str | None = None):
        message = message.rstrip(".")
        text = f"Error: {message}."
        if prog:
            text += f" See '{prog} --help'."
        super().__init__(text, code)
        self.message = message


def daemon_error_text(message: str) -> str:
    """How Docker's CLI prints an error the daemon answered."""
    if message.startswith(DAEMON_PREFIX) or message.startswith("Error:"):
        return message
    return DAEMON_PREFIX + message


def is_local_client_error(err: MuslinError) -> bool:
    # muslin.client raises plain MuslinErrors of its own (daemon not running,
    # failed to start, closed the connection), all worded "muslin daemon …";
    # everything else is an answer from the daemon.
    return err.message.startswith("muslin daemon ")


def call(client, op: str, **args):
    """``client.call`` with the errors turned into :class:`CliError` lines."""
    try:
        return client.call(op, **args)
    except MuslinError as e:
        if is_local_client_error(e):
            raise CliError(f"Error: {e.message}", cause=e) from None
        raise CliError(daemon_error_text(e.message), cause=e) from None
    except ValueError as e:  # an unparsable reply
        raise CliError(f"Error: invalid reply from the muslin daemon: {e}", cause=e) from None
    except OSError as e:
        from muslin.client import socket_path

        where = socket_path(client.root)
        reason = e.strerror or str(e)
        if isinstance(e, PermissionError):
            raise CliError(
                f"permission denied while trying to connect to the muslin daemon socket at {where}", cause=e
            ) from None
        raise CliError(f"Error: cannot connect to the muslin daemon at {where}: {reason}", cause=e) from None


def write_out(text: str) -> None:
    if text:
        sys.stdout.write(text)


def write_err(line: str) -> None:
    sys.stderr.write(line.rstrip("\n") + "\n")


def execute(plan, client=None) -> int:
    """Run a parsed command (:class:`~.commands.Plan`); its exit status."""
    from muslin.frontends.cli.commands import handler

    if plan.command in ("help", "version"):
        write_out(plan.opts["text"])
        return 0
    if client is None:
        from muslin.client import Client

        client = Client(plan.root)
    return handler(plan.command)(plan, client)


def main(argv: list[str] | None = None) -> int:
    from muslin.frontends.cli.commands import parse

    if argv is None:
        argv = sys.argv[1:]
    try:
        return execute(parse(argv))
    except CliError as e:
        _flush_quietly()
        write_err(e.text)
        return e.code
    except KeyboardInterrupt:
        _flush_quietly()
        return 130
    except BrokenPipeError:
        # output piped into e.g. head: stop quietly (and keep Python from complaining at exit)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except MuslinError as e:  # not expected past call(), but never a traceback
        _flush_quietly()
        write_err(daemon_error_text(e.message))
        return EXIT_ERROR
    except OSError as e:
        _flush_quietly()
        what = f": {e.filename}" if e.filename else ""
        write_err(f"Error: {e.strerror or e}{what}")
        return EXIT_ERROR
    except Exception as e:  # a bug or an unexpected answer: still one line (MUSLIN_DEBUG=1 for the traceback)
        if os.environ.get("MUSLIN_DEBUG"):
            raise
        _flush_quietly()
        write_err(f"Error: unexpected {type(e).__name__}: {e} (set MUSLIN_DEBUG=1 for details)")
        return EXIT_ERROR


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
