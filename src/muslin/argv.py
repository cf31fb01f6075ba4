"""A small declarative command-line parser with Docker's (cobra/pflag's) habits.

Why not argparse: the CLI is one process per command, and importing argparse
(with the re, enum and gettext it brings) and building its parsers cost ~10 ms
of every start. This module imports nothing.

A command line is a tree of :class:`Cmd`; a command either has sub-commands
(a group: ``muslin``, ``muslin network``) or options and positional
arguments (a leaf). What is supported, as Docker's CLI does it:

* long options ``--subnet X`` and ``--subnet=X``; short ones ``-d X``,
  ``-dX``, ``-d=X``; short booleans grouped (``-aq``);
* boolean flags (``--ipv6``, or explicitly ``--ipv6=false``), options taking
  one value (the last one given wins), repeatable options collecting a list;
* options and positionals in any order; ``--`` ends the options;
* positionals, each one (``nargs=1``), optional (``"?"``) or one or more
  (``"+"``);
* ``rest``: a command that runs another command (``run``, ``exec``) takes
  everything from its first positional word beyond its own arguments as that
  command: options stop there (pflag's ``SetInterspersed(false)``), so
  ``muslin run sleep -d`` runs ``sleep -d``;
* options that stop the parse (``-h/--help`` on every command, ``--version``);
* groups of options that exclude each other.

Options of a group (``--root``) are accepted only before its sub-command, as
Docker's global options. ``--help`` texts are generated from the same
declarations (:func:`format_help`).

Errors are :class:`ArgvError`, worded as pflag/cobra word them and carrying
Docker's exit status: 125 for a flag error, 1 for wrong arguments or an
unknown command.
"""

FLAG_ERROR = 125  # docker: unknown flag, missing or bad flag value
ARGS_ERROR = 1  # docker: wrong number of arguments, unknown command


class ArgvError(Exception):
    """A usage error: ``message`` (no final period), the exit ``code``, and the command ``prog`` it is about."""

    def __init__(self, message: str, code: int, prog: str):
        super().__init__(message)
        self.message = message
        self.code = code
        self.prog = prog


class Opt:
    """An option. Without ``metavar`` it is a boolean flag; with one it takes a value, converted by ``type``
    (``str``, ``int``); ``multiple`` collects every value given into a list."""

    __slots__ = ("names", "dest", "metavar", "type", "multiple", "default", "help", "stop", "implicit")

    def __init__(self, *names: str, metavar: str | None = None, type=str, multiple: bool = False,
                 default=None, help: str = "", dest: str | None = None, stop: bool = False,
                 implicit: str | None = None):
        self.names = names
        long = next((n for n in names if n.startswith("--")), names[0])
        self.dest = dest or long.lstrip("-").replace("-", "_")
        self.metavar = metavar
        self.type = type
        self.multiple = multiple
        self.default = default
        self.help = help
        self.stop = stop  # seen: the parse ends there (help, version)
        # the value of a long option given without "=VALUE" (pflag's NoOptDefVal: --docker-plugin[=PATH]);
        # the next word is then never taken as its value
        self.implicit = implicit

    @property
    def flag(self) -> str:
        """The name errors use: the long one."""
        return next((n for n in self.names if n.startswith("--")), self.names[0])

    def initial(self):
        if self.multiple:
            return []
        if self.metavar is None and self.default is None:
            return False
        return self.default


class Arg:
    """A positional argument: ``nargs`` 1, ``"?"`` (optional) or ``"+"`` (one or more, a list)."""

    __slots__ = ("dest", "metavar", "nargs")

    def __init__(self, dest: str, metavar: str, nargs=1):
        if nargs not in (1, "?", "+"):
            raise ValueError(f"nargs must be 1, '?' or '+', not {nargs!r}")
        self.dest = dest
        self.metavar = metavar
        self.nargs = nargs

    def usage(self) -> str:
        if self.nargs == "?":
            return f"[{self.metavar}]"
        if self.nargs == "+":
            return f"{self.metavar} [{self.metavar}...]"
        return self.metavar


HELP = Opt("-h", "--help", help="Print usage", stop=True)


class Cmd:
    """A command: a group (``commands``) or a leaf (``options``, ``args``, ``rest``)."""

    __slots__ = ("name", "summary", "description", "options", "args", "rest", "commands", "aliases",
                 "exclusive", "parent", "_index")

    def __init__(self, name: str, summary: str = "", *, description: str | None = None, options=(), args=(),
                 rest: Arg | None = None, commands=(), aliases=(), exclusive=()):
        if commands and (args or rest):
            raise ValueError(f"{name}: a command with sub-commands takes no positional arguments")
        self.name = name
        self.summary = summary
        self.description = description or summary
        self.options = tuple(options)
        self.args = tuple(args)
        self.rest = rest  # the command to run: every word from the first one beyond ``args`` on
        self.commands = tuple(commands)
        self.aliases = tuple(aliases)
        self.exclusive = tuple(exclusive)  # tuples of dests of which at most one may be given
        self.parent = None
        for c in self.commands:
            c.parent = self
        self._index = None

    @property
    def prog(self) -> str:
        """``muslin network create``."""
        names = []
        c = self
        while c is not None:
            names.append(c.name)
            c = c.parent
        return " ".join(reversed(names))

    @property
    def path(self) -> tuple[str, ...]:
        """The canonical names below the root: ``("network", "create")``."""
        names = []
        c = self
        while c.parent is not None:
            names.append(c.name)
            c = c.parent
        return tuple(reversed(names))

    def lookup(self, name: str):
        """The option named ``--long`` or ``-s`` (or a sub-command by name or alias), or None."""
        if self._index is None:  # built on first use: a run only indexes the commands it goes through
            index = {}
            for opt in (HELP,) + self.options:  # a command's own -h (run's --hostname) comes first
                for n in opt.names:
                    index[n] = opt
            for c in self.commands:
                for n in (c.name, *c.aliases):
                    index[n] = c
            self._index = index
        return self._index.get(name)


class Parsed:
    """The result: the command reached, every dest's value, and the stopping option's dest (or None)."""

    __slots__ = ("command", "values", "stopped")

    def __init__(self, command: Cmd, values: dict, stopped: str | None = None):
        self.command = command
        self.values = values
        self.stopped = stopped

    def __repr__(self) -> str:
        return f"Parsed({self.command.prog!r}, {self.values!r}, stopped={self.stopped!r})"


# --------------------------------------------------------------------------- parsing


def parse(root: Cmd, argv) -> Parsed:
    """Parse ``argv`` (without the program name) against the tree under ``root``; raises :class:`ArgvError`."""
    argv = list(argv)
    cmd = root
    values = {}
    _defaults(cmd, values)
    words = []
    i, n = 0, len(argv)
    while i < n:
        a = argv[i]
        i += 1
        if a == "--" and not cmd.commands:
            words.extend(argv[i:])
            break
        if a.startswith("-") and len(a) > 1:
            i, stop = _option(cmd, a, argv, i, values)
            if stop is not None:
                return Parsed(cmd, values, stop)
            continue
        if cmd.commands:
            sub = cmd.lookup(a)
            if not isinstance(sub, Cmd):
                raise ArgvError(f"'{a}' is not a {cmd.prog} command", ARGS_ERROR, cmd.prog)
            cmd = sub
            _defaults(cmd, values)
            continue
        if cmd.rest is not None:  # the options end here: the rest belongs to the command to run
            words.append(a)
            words.extend(argv[i:])
            break
        words.append(a)
    if not cmd.commands:
        _assign(cmd, words, values)
        _check_exclusive(cmd, values)
    return Parsed(cmd, values)


def _defaults(cmd: Cmd, values: dict) -> None:
    for opt in cmd.options:
        values[opt.dest] = opt.initial()


def _option(cmd: Cmd, a: str, argv: list, i: int, values: dict) -> tuple[int, str | None]:
    """Consume the option word ``a`` (and its value from ``argv[i]`` if needed): (next index, stop dest or None)."""
    if a.startswith("--"):
        name, eq, value = a.partition("=")
        opt = cmd.lookup(name)
        if not isinstance(opt, Opt):
            raise ArgvError(f"unknown flag: {name}", FLAG_ERROR, cmd.prog)
        if opt.metavar is None:
            _store_bool(cmd, opt, name, value if eq else None, values)
        else:
            if not eq and opt.implicit is not None:
                value = opt.implicit
            elif not eq:
                if i >= len(argv):
                    raise ArgvError(f"flag needs an argument: {name}", FLAG_ERROR, cmd.prog)
                value = argv[i]
                i += 1
            _store(cmd, opt, value, values)
        return i, (opt.dest if opt.stop else None)
    # one or more short options: -d, -dq, -dVALUE, -d=VALUE
    j = 1
    while j < len(a):
        c = a[j]
        j += 1
        opt = cmd.lookup("-" + c)
        if not isinstance(opt, Opt):
            raise ArgvError(f"unknown shorthand flag: '{c}' in {a}", FLAG_ERROR, cmd.prog)
        if opt.metavar is not None:
            value = a[j:]
            if value.startswith("="):
                value = value[1:]
            elif not value:
                if i >= len(argv):
                    raise ArgvError(f"flag needs an argument: '{c}' in {a}", FLAG_ERROR, cmd.prog)
                value = argv[i]
                i += 1
            _store(cmd, opt, value, values)
            j = len(a)
        elif a.startswith("=", j):
            _store_bool(cmd, opt, "-" + c, a[j + 1:], values)
            j = len(a)
        else:
            _store_bool(cmd, opt, "-" + c, None, values)
        if opt.stop:
            return i, opt.dest
    return i, None


TRUE = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool
FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _store_bool(cmd: Cmd, opt: Opt, name: str, value: str | None, values: dict) -> None:
    if value is None or value in TRUE:
        values[opt.dest] = True
    elif value in FALSE:
        values[opt.dest] = False
    else:
        raise ArgvError(f'invalid argument "{value}" for "{opt.flag}" flag: expected true or false',
                        FLAG_ERROR, cmd.prog)


def _store(cmd: Cmd, opt: Opt, raw: str, values: dict) -> None:
    try:
        value = opt.type(raw)
    except ValueError:
        what = "an integer" if opt.type is int else f"a {getattr(opt.type, '__name__', 'value')}"
        raise ArgvError(f'invalid argument "{raw}" for "{opt.flag}" flag: expected {what}',
                        FLAG_ERROR, cmd.prog) from None
    if opt.multiple:
        values[opt.dest].append(value)
    else:
        values[opt.dest] = value


def _assign(cmd: Cmd, words: list, values: dict) -> None:
    """Hand the positional words to ``cmd.args`` (then ``cmd.rest``); too few or too many is an error."""
    required = sum(1 for a in cmd.args if a.nargs != "?")
    spare = len(words) - required  # words beyond the required ones, for "?" and "+"
    k = 0
    missing = []
    for arg in cmd.args:
        if arg.nargs == 1:
            if k < len(words):
                values[arg.dest] = words[k]
                k += 1
            else:
                missing.append(arg.metavar)
        elif arg.nargs == "?":
            if spare > 0:
                values[arg.dest] = words[k]
                k += 1
                spare -= 1
            else:
                values[arg.dest] = None
        else:  # "+"
            take = 1 + max(spare, 0)
            if k < len(words):
                values[arg.dest] = words[k:k + take]
                k += take
                spare = 0
            else:
                values[arg.dest] = []
                missing.append(arg.metavar)
    if missing:
        raise ArgvError(f"the following arguments are required: {', '.join(missing)}", ARGS_ERROR, cmd.prog)
    if cmd.rest is not None:
        values[cmd.rest.dest] = words[k:]
    elif k < len(words):
        raise ArgvError(f"unexpected argument: {' '.join(words[k:])}", ARGS_ERROR, cmd.prog)


def _check_exclusive(cmd: Cmd, values: dict) -> None:
    for group in cmd.exclusive:
        given = [o for o in cmd.options if o.dest in group and values[o.dest] != o.initial()]
        if len(given) > 1:
            names = " and ".join(o.flag for o in given)
            raise ArgvError(f"conflicting options: cannot specify both {names}", FLAG_ERROR, cmd.prog)


# --------------------------------------------------------------------------- help


def format_help(cmd: Cmd) -> str:
    """``--help`` for ``cmd``, laid out as Docker's CLI lays it out."""
    prog = cmd.prog
    usage = [prog]
    if cmd.options:
        usage.append("[OPTIONS]")
    if cmd.commands:
        usage.append("COMMAND")
    usage.extend(a.usage() for a in cmd.args)
    if cmd.rest is not None:
        usage.append(cmd.rest.metavar)
    out = [f"\nUsage:  {' '.join(usage)}\n", f"\n{cmd.description}\n"]
    if cmd.aliases:
        base = prog.rsplit(" ", 1)[0]
        out.append("\nAliases:\n  " + ", ".join(f"{base} {n}" for n in (cmd.name, *cmd.aliases)) + "\n")
    if cmd.commands:
        width = max(12, max(len(c.name) for c in cmd.commands) + 3)
        out.append("\nCommands:\n")
        out.extend(f"  {c.name.ljust(width)}{c.summary}\n" for c in cmd.commands)
    if cmd.options:
        rows = [(_option_label(o), _option_help(o)) for o in cmd.options]
        width = max(len(label) for label, _ in rows) + 3
        out.append("\nGlobal Options:\n" if cmd.parent is None and cmd.commands else "\nOptions:\n")
        out.extend(f"{label.ljust(width)}{text}".rstrip() + "\n" for label, text in rows)
    if cmd.commands:
        out.append(f"\nRun '{prog} COMMAND --help' for more information on a command.\n")
    return "".join(out)


def _option_label(opt: Opt) -> str:
    shorts = [n for n in opt.names if not n.startswith("--")]
    longs = [n for n in opt.names if n.startswith("--")]
    label = ("  " + ", ".join(shorts + longs)) if shorts else "      " + ", ".join(longs)
    if opt.metavar:
        label += f"[={opt.metavar}]" if opt.implicit is not None else f" {opt.metavar}"
    return label


def _option_help(opt: Opt) -> str:
    text = opt.help
    if opt.metavar and not opt.multiple and opt.default not in (None, ""):
        text += f' (default "{opt.default}")' if isinstance(opt.default, str) else f" (default {opt.default})"
    return text
