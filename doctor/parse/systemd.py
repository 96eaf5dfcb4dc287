"""Read systemd units the way systemd does, keeping the file and line of every value.

Covers what a doctor needs to know about a service without asking systemd (it may not be
running, or the facts come from a bundle): which unit file and drop-ins apply, in which
order; the ``Environment=``/``EnvironmentFile=`` environment; the ``ExecStart=`` command
lines and their ``$VAR``/``${VAR}`` expansion. Each value carries an :class:`Origin`
(file:line) so a finding can say where a setting came from.

Why our own parser: the libraries on PyPI do not follow systemd's rules.
``systemdunitparser`` is configparser with duplicate keys: continuation by indentation instead
of a trailing backslash, no drop-ins, no line numbers. ``python-dotenv`` makes ``fi`` (from
``/etc/sysconfig/docker``) a variable, turns ``\\n`` inside double quotes into a newline and
interpolates ``${VAR}``; systemd does none of that. ``docker-systemctl-replacement`` is a
7000-line CLI whose env-file reader is three regular expressions and which keeps no line
numbers. The rules below come from systemd.syntax(7), systemd.exec(5), systemd.service(5),
systemd.unit(5) and the code of systemd 219 (CentOS 7) and later:

- unit files: ``#``/``;`` comments, a trailing backslash joins the next line (the backslash
  becomes a space; comment lines inside a continuation are skipped, as systemd >= 235 does),
  whitespace around ``=`` ignored, a bad section header or a line without ``=`` is an error
  (systemd 219 refuses such a unit), a file ending inside a continuation is reported as
  truncated (systemd 219 silently drops that last line);
- unit lookup: the first ``NAME`` in :data:`SYSTEM_UNIT_PATH` wins completely (a link to
  ``/dev/null`` or an empty file masks it); ``NAME.d/*.conf`` drop-ins from every directory,
  a name in a higher directory hiding the same name below, applied after the unit in
  lexicographic order of file name whatever the directory;
- list settings are appended to and reset by an empty assignment;
- ``Environment=``: quoted words, later assignment wins, ``$`` has no meaning;
  ``EnvironmentFile=``: ``-`` prefix (missing file ignored), read in order, overriding
  ``Environment=``; the file format is systemd's ``parse_env_file`` state machine (quotes,
  backslash escapes, lines without ``=`` such as ``if [ … ]; then`` dropped, indented
  assignments kept, no variable expansion);
- ``ExecStart=``: ``@-:+!`` prefixes, ``;`` between commands; at run time a word that is
  exactly ``$VAR`` becomes the value split into words (quotes respected), ``${VAR}`` inside a
  word becomes exactly the value, ``$$`` is ``$``, unknown variables are empty.

Not modelled: the manager's own environment (``DefaultEnvironment=``), ``PassEnvironment=``,
``UnsetEnvironment=``, ``.include``, top-level ``service.d/`` drop-ins and most ``%``
specifiers (``%%``, ``%n``, ``%N``, ``%p``, ``%i`` and the directory ones are resolved).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Where system units are looked up, highest precedence first (systemd.unit(5)).
SYSTEM_UNIT_PATH: tuple[str, ...] = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE = " \t\n\r"
_EXEC_PREFIXES = "@-:+!"
_GLOB_CHARS = frozenset("*?[")


class UnitSyntaxError(ValueError):
    """A unit file systemd would refuse or misread; ``str()`` is ``path:line: reason``."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


class FileReader(Protocol):
    """What the parser needs to read a node's files (``doctor.core.sources.NodeFacts`` fits)."""

    def read_text(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def readlink(self, path: str) -> str | None: ...


@dataclass(frozen=True, order=True)
class Origin:
    """Where a value was written: a node path and a 1-based line."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Directive:
    """One ``Key=value`` of a unit file (continuations joined)."""

    section: str
    key: str
    value: str
    origin: Origin
    #: (offset into ``value``, physical line) for each joined line, to place words.
    line_starts: tuple[tuple[int, int], ...] = ()

    def origin_at(self, offset: int) -> Origin:
        """The file and physical line of the character at ``offset`` in ``value``."""
        line = self.origin.line
        for start, number in self.line_starts:
            if start <= offset:
                line = number
            else:
                break
        return Origin(self.origin.path, line)


# -- unit file syntax ---------------------------------------------------------------------


def _ends_escaped(text: str) -> bool:
    escaped = False
    for char in text:
        escaped = False if escaped else char == "\\"
    return escaped


def parse_unit_text(text: str, path: str) -> list[Directive]:
    """The directives of one unit file or drop-in, in file order."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    directives: list[Directive] = []
    section: str | None = None
    pieces: list[tuple[str, int]] = []  # a continued logical line: (text, physical line)
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        stripped = line.lstrip(_WHITESPACE)
        if stripped[:1] in ("#", ";"):
            continue  # comments, also inside a continuation (systemd >= 235)
        piece = stripped if pieces else line
        pieces.append((piece, number))
        logical = "".join(p for p, _ in pieces)
        if _ends_escaped(logical):
            # The trailing backslash becomes a space and the next line is appended.
            pieces[-1] = (piece[:-1] + " ", number)
            continue
        section = _parse_line(pieces, section, path, directives)
        pieces = []
    if pieces:
        raise UnitSyntaxError(
            path,
            pieces[0][1],
            "file ends inside a continued line (trailing backslash): truncated?",
        )
    return directives


def _parse_line(
    pieces: list[tuple[str, int]], section: str | None, path: str, out: list[Directive]
) -> str | None:
    """Add the directive of one logical line to ``out``; return the current section."""
    logical = "".join(p for p, _ in pieces)
    first_line = pieces[0][1]
    stripped = logical.strip(_WHITESPACE)
    if not stripped or stripped.startswith(".include"):
        return section  # .include is obsolete and ignored by current systemd
    if stripped.startswith("["):
        if not stripped.endswith("]") or len(stripped) < 3:
            raise UnitSyntaxError(path, first_line, f"invalid section header {stripped!r}")
        return stripped[1:-1]
    if "=" not in stripped:
        raise UnitSyntaxError(
            path, first_line, f"missing '=' (not a Key=value line): {stripped[:60]!r}"
        )
    if section is None:
        return None  # "Assignment outside of section. Ignoring."
    lead = len(logical) - len(logical.lstrip(_WHITESPACE))
    eq = stripped.index("=")
    key = stripped[:eq].strip(_WHITESPACE)
    raw_value = stripped[eq + 1 :]
    value = raw_value.strip(_WHITESPACE)
    value_offset = lead + eq + 1 + (len(raw_value) - len(raw_value.lstrip(_WHITESPACE)))
    starts: list[tuple[int, int]] = []
    position = 0
    for piece, number in pieces:
        starts.append((position - value_offset, number))
        position += len(piece)
    out.append(Directive(section, key, value, Origin(path, first_line), tuple(starts)))
    return section


# -- words and quoting --------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "s": " ",
    "\\": "\\",
    '"': '"',
    "'": "'",
    # Exec lines: an escaped separator is literal ("\ "), "\;" is a literal ";".
    " ": " ",
    "\t": "\t",
    ";": ";",
}


def _cunescape_one(text: str, index: int) -> tuple[str, int]:
    """Decode the escape after a backslash at ``text[index]``; return (chars, length)."""
    char = text[index]
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], 1
    hex_digits = {"x": 2, "u": 4, "U": 8}.get(char)
    if hex_digits:
        digits = text[index + 1 : index + 1 + hex_digits]
        if len(digits) == hex_digits and all(c in "0123456789abcdefABCDEF" for c in digits):
            return chr(int(digits, 16)), 1 + hex_digits
    digits = text[index : index + 3]
    if len(digits) == 3 and all(c in "01234567" for c in digits):
        return chr(int(digits, 8)), 3
    return "\\" + char, 1  # unknown escape: kept as written


@dataclass(frozen=True)
class Word:
    """A word of a quoted string: its value, where it starts, and its source text."""

    value: str
    offset: int
    raw: str


def split_words(text: str, *, cunescape: bool = True, relax: bool = False) -> list[Word]:
    """Split like systemd's ``extract_first_word(EXTRACT_UNQUOTE [| EXTRACT_CUNESCAPE])``.

    Whitespace separates words; ``'…'`` and ``"…"`` quote (also in the middle of a word) and
    are removed; a backslash escapes the next character (C escapes when ``cunescape``).
    An unterminated quote or a trailing backslash raise :class:`ValueError` unless ``relax``.
    """
    words: list[Word] = []
    index = 0
    length = len(text)
    while True:
        while index < length and text[index] in _WHITESPACE:
            index += 1
        if index >= length:
            return words
        start = index
        value: list[str] = []
        quote: str | None = None
        while index < length:
            char = text[index]
            if char == "\\":
                if index + 1 >= length:
                    if relax:
                        index += 1
                        break
                    raise ValueError("trailing backslash")
                if cunescape:
                    decoded, used = _cunescape_one(text, index + 1)
                    value.append(decoded)
                    index += 1 + used
                else:
                    value.append(text[index + 1])
                    index += 2
                continue
            if quote is not None:
                if char == quote:
                    quote = None
                else:
                    value.append(char)
            elif char in "'\"":
                quote = char
            elif char in _WHITESPACE:
                break
            else:
                value.append(char)
            index += 1
        if quote is not None and not relax:
            raise ValueError(f"unterminated {quote} quote")
        words.append(Word("".join(value), start, text[start:index]))


def resolve_specifiers(text: str, specifiers: Mapping[str, str]) -> str:
    """Replace ``%X`` specifiers; ``%%`` is ``%``; unknown ones are left as written."""
    if "%" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%" and index + 1 < len(text):
            spec = text[index + 1]
            if spec == "%":
                out.append("%")
                index += 2
                continue
            if spec in specifiers:
                out.append(specifiers[spec])
                index += 2
                continue
        out.append(char)
        index += 1
    return "".join(out)


def unit_specifiers(name: str) -> dict[str, str]:
    """The specifiers of a system unit that do not depend on the running machine."""
    prefix = name.rsplit(".", 1)[0]
    template, _, instance = prefix.partition("@")
    return {
        "n": name,
        "N": prefix,
        "p": template,
        "P": template,
        "i": instance,
        "I": instance,
        "t": "/run",
        "S": "/var/lib",
        "C": "/var/cache",
        "L": "/var/log",
        "E": "/etc",
        "T": "/tmp",
        "V": "/var/tmp",
    }


# -- unit lookup --------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A unit as systemd loads it: the fragment, then its drop-ins, as one directive list."""

    name: str
    fragment: str | None
    dropins: tuple[str, ...]
    directives: tuple[Directive, ...]
    masked: bool = False

    def assignments(self, section: str, key: str) -> list[Directive]:
        return [d for d in self.directives if d.section == section and d.key == key]

    def last(self, section: str, key: str) -> Directive | None:
        """A scalar setting: the last assignment wins."""
        found = self.assignments(section, key)
        return found[-1] if found else None

    def list_setting(self, section: str, key: str) -> list[Directive]:
        """A list setting: assignments append, an empty one resets the list."""
        kept: list[Directive] = []
        for directive in self.assignments(section, key):
            if directive.value == "":
                kept = []
            else:
                kept.append(directive)
        return kept

    @property
    def files(self) -> tuple[str, ...]:
        return ((self.fragment,) if self.fragment else ()) + self.dropins


def _resolve_link(reader: FileReader, path: str) -> str:
    """Follow symbolic links inside the node's tree (absolute targets stay in the tree)."""
    for _ in range(40):
        target = reader.readlink(path)
        if target is None:
            return path
        path = posixpath.normpath(
            target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
        )
    raise UnitSyntaxError(path, None, "too many levels of symbolic links")


def _read_unit_file(reader: FileReader, path: str) -> str | None:
    """The text of a unit file; "" when masked (linked to /dev/null); None when absent."""
    real = _resolve_link(reader, path)
    if real == "/dev/null":
        return ""
    return reader.read_text(real)


def find_unit_files(
    name: str, reader: FileReader, search_path: Sequence[str] = SYSTEM_UNIT_PATH
) -> tuple[str | None, list[str]]:
    """The unit file systemd uses for ``name`` and its drop-ins in application order."""
    fragment = None
    for directory in search_path:
        candidate = f"{directory}/{name}"
        if reader.readlink(candidate) is not None or reader.read_text(candidate) is not None:
            fragment = candidate
            break
    by_name: dict[str, str] = {}
    for directory in search_path:
        dropin_dir = f"{directory}/{name}.d"
        for entry in reader.listdir(dropin_dir):
            if entry.endswith(".conf") and entry not in by_name:
                by_name[entry] = f"{dropin_dir}/{entry}"
    return fragment, [by_name[entry] for entry in sorted(by_name)]


def load_unit(
    name: str, reader: FileReader, search_path: Sequence[str] = SYSTEM_UNIT_PATH
) -> Unit | None:
    """Load ``name`` with its drop-ins; None when there is neither a unit file nor a drop-in.

    Raises :class:`UnitSyntaxError` for a file systemd would not load.
    """
    fragment, dropins = find_unit_files(name, reader, search_path)
    if fragment is None and not dropins:
        return None
    directives: list[Directive] = []
    masked = False
    if fragment is not None:
        text = _read_unit_file(reader, fragment)
        if text is None or text.strip() == "":
            masked = True  # systemd treats a link to /dev/null and an empty file as a mask
        else:
            directives.extend(parse_unit_text(text, fragment))
    loaded_dropins: list[str] = []
    for path in dropins:
        text = _read_unit_file(reader, path)
        if text is None:
            continue
        loaded_dropins.append(path)
        directives.extend(parse_unit_text(text, path))
    return Unit(name, fragment, tuple(loaded_dropins), tuple(directives), masked)


# -- environment --------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """A variable of a service's environment and where it was set."""

    name: str
    value: str
    origin: Origin
    #: "Environment=" or "EnvironmentFile=<path>"
    via: str


def parse_environment_value(directive: Directive, specifiers: Mapping[str, str]) -> list[EnvVar]:
    """The assignments of one ``Environment=`` line (invalid words are ignored, as systemd does).

    Raises :class:`UnitSyntaxError` on unbalanced quotes (systemd ignores the line then).
    """
    try:
        words = split_words(directive.value)
    except ValueError as exc:
        raise UnitSyntaxError(
            directive.origin.path, directive.origin.line, f"Environment=: {exc}"
        ) from exc
    found: list[EnvVar] = []
    for word in words:
        assignment = resolve_specifiers(word.value, specifiers)
        name, sep, value = assignment.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            continue
        found.append(EnvVar(name, value, directive.origin_at(word.offset), "Environment="))
    return found


def parse_env_file(text: str, path: str) -> list[EnvVar]:
    """Assignments of an ``EnvironmentFile=``, by systemd's ``parse_env_file`` rules.

    Never fails: what systemd would skip (lines without ``=``, invalid names) is skipped.
    """
    found: list[EnvVar] = []
    via = f"EnvironmentFile={path}"
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    last_value_whitespace = -1
    key_line = 1
    line = 1

    def push() -> None:
        name = "".join(key).rstrip(_WHITESPACE)
        if _ENV_NAME.fullmatch(name):
            found.append(EnvVar(name, "".join(value), Origin(path, key_line), via))

    for char in text:
        newline = char in "\n\r"
        if state == "pre_key":
            if char in "#;":
                state = "comment"
            elif char not in _WHITESPACE:
                state = "key"
                key, value = [char], []
                key_line = line
        elif state == "key":
            if newline:
                state = "pre_key"  # a line without "=": dropped
            elif char == "=":
                state = "pre_value"
            else:
                key.append(char)
        elif state == "pre_value":
            if newline:
                push()
                state = "pre_key"
            elif char == "'":
                state = "single_quote"
            elif char == '"':
                state = "double_quote"
            elif char == "\\":
                state = "value_escape"
            elif char not in _WHITESPACE:
                state = "value"
                value.append(char)
                last_value_whitespace = -1
        elif state == "value":
            if newline:
                if last_value_whitespace >= 0:
                    del value[last_value_whitespace:]
                push()
                state = "pre_key"
            elif char == "\\":
                state = "value_escape"
                last_value_whitespace = -1
            else:
                if char in _WHITESPACE:
                    if last_value_whitespace < 0:
                        last_value_whitespace = len(value)
                else:
                    last_value_whitespace = -1
                value.append(char)
        elif state == "value_escape":
            state = "value"
            if not newline:
                value.append(char)  # backslash-newline continues the value
        elif state == "single_quote":
            if char == "'":
                state = "pre_value"
            else:
                value.append(char)
        elif state == "double_quote":
            if char == '"':
                state = "pre_value"
            elif char == "\\":
                state = "double_quote_escape"
            else:
                value.append(char)
        elif state == "double_quote_escape":
            state = "double_quote"
            if char in '"\\`$':
                value.append(char)
            elif not newline:
                value.extend(("\\", char))
        elif state == "comment":
            if char == "\\":
                state = "comment_escape"
            elif newline:
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment"
        if char == "\n":
            line += 1
    if state in (
        "pre_value",
        "value",
        "value_escape",
        "single_quote",
        "double_quote",
        "double_quote_escape",
    ):
        if state == "value" and last_value_whitespace >= 0:
            del value[last_value_whitespace:]
        push()
    return found


@dataclass(frozen=True)
class EnvFile:
    """One ``EnvironmentFile=`` entry and what reading it gave."""

    path: str
    optional: bool
    directive: Directive
    #: False when the file does not exist (fine when ``optional``).
    loaded: bool
    variables: tuple[EnvVar, ...] = ()


@dataclass(frozen=True)
class ServiceEnvironment:
    """The environment a service's processes get from its unit (not the manager's)."""

    variables: Mapping[str, EnvVar]
    files: tuple[EnvFile, ...]
    assignments: tuple[EnvVar, ...] = field(default=())  # every Environment= value, in order

    @property
    def missing_required(self) -> list[EnvFile]:
        """Files without ``-`` that do not exist: systemd fails to start the service."""
        return [f for f in self.files if not f.loaded and not f.optional]

    def loads(self, path: str) -> bool:
        """True when ``path`` is one of the environment files read."""
        return any(f.path == path and f.loaded for f in self.files)


def _expand_glob(reader: FileReader, pattern: str) -> list[str]:
    directory, base = posixpath.split(pattern)
    if not _GLOB_CHARS & set(base):
        return [pattern]
    return [
        f"{directory}/{e}" for e in sorted(reader.listdir(directory)) if fnmatch.fnmatch(e, base)
    ]


def service_environment(
    unit: Unit, reader: FileReader, section: str = "Service"
) -> ServiceEnvironment:
    """``Environment=`` assignments, then the ``EnvironmentFile=`` files in order over them."""
    specifiers = unit_specifiers(unit.name)
    variables: dict[str, EnvVar] = {}
    assignments: list[EnvVar] = []
    for directive in unit.list_setting(section, "Environment"):
        for env in parse_environment_value(directive, specifiers):
            assignments.append(env)
            variables[env.name] = env
    files: list[EnvFile] = []
    for directive in unit.list_setting(section, "EnvironmentFile"):
        spec = resolve_specifiers(directive.value, specifiers)
        optional = spec.startswith("-")
        pattern = spec[1:] if optional else spec
        if not pattern.startswith("/"):
            continue  # systemd: "Path '…' is not absolute, ignoring."
        paths = _expand_glob(reader, pattern)
        if not paths:
            files.append(EnvFile(pattern, optional, directive, loaded=False))
        for path in paths:
            text = _read_unit_file(reader, path)
            if text is None:
                files.append(EnvFile(path, optional, directive, loaded=False))
                continue
            parsed = tuple(parse_env_file(text, path))
            files.append(EnvFile(path, optional, directive, loaded=True, variables=parsed))
            for env in parsed:
                variables[env.name] = env
    return ServiceEnvironment(variables, tuple(files), tuple(assignments))


# -- command lines ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecWord:
    """A word of an ``Exec*=`` line after unquoting, before ``$`` expansion."""

    text: str
    origin: Origin
    raw: str = ""  # as written in the unit (quotes, escapes, specifiers kept)


@dataclass(frozen=True)
class ExecCommand:
    """One command of an ``Exec*=`` setting."""

    directive: Directive
    prefixes: str
    words: tuple[ExecWord, ...]  # words[0] is the program

    @property
    def template(self) -> str:
        """The command as written in the unit, words joined by one space."""
        return " ".join(word.raw for word in self.words)

    def references(self) -> set[str]:
        """Names of the variables the command expands (``$VAR`` and ``${VAR}``)."""
        names: set[str] = set()
        for word in self.words:
            text = word.text
            if text.startswith("$") and text[1:2] not in ("{", "$"):
                names.add(text[1:])
            names.update(re.findall(r"\$\{([^}]*)\}", text))
        return names


def parse_exec(directive: Directive, specifiers: Mapping[str, str]) -> list[ExecCommand]:
    """The commands of one ``Exec*=`` line (a lone ``;`` separates commands).

    Raises :class:`UnitSyntaxError` on unbalanced quotes: systemd ignores such a line.
    """
    try:
        words = split_words(directive.value)
    except ValueError as exc:
        raise UnitSyntaxError(
            directive.origin.path,
            directive.origin.line,
            f"{directive.key}= has {exc} (systemd ignores this line: invalid command line)",
        ) from exc
    commands: list[ExecCommand] = []
    current: list[Word] = []
    for word in [*words, None]:
        if word is None or word.raw == ";":
            if current:
                first = current[0]
                program = first.value.lstrip(_EXEC_PREFIXES)
                prefixes = first.value[: len(first.value) - len(program)]
                exec_words = [
                    ExecWord(
                        resolve_specifiers(program, specifiers),
                        directive.origin_at(first.offset),
                        first.raw,
                    )
                ]
                exec_words.extend(
                    ExecWord(
                        resolve_specifiers(w.value, specifiers),
                        directive.origin_at(w.offset),
                        w.raw,
                    )
                    for w in current[1:]
                )
                commands.append(ExecCommand(directive, prefixes, tuple(exec_words)))
            current = []
        else:
            current.append(word)
    return commands


def exec_commands(
    unit: Unit, key: str = "ExecStart", section: str = "Service"
) -> list[ExecCommand]:
    """The effective commands of an ``Exec*=`` list setting (an empty assignment resets)."""
    specifiers = unit_specifiers(unit.name)
    commands: list[ExecCommand] = []
    for directive in unit.list_setting(section, key):
        commands.extend(parse_exec(directive, specifiers))
    return commands


@dataclass(frozen=True)
class Arg:
    """One argument of an expanded command line, and where it came from."""

    value: str
    origin: Origin  # the word in the unit file
    variables: tuple[EnvVar, ...] = ()  # the variables it was expanded from

    def provenance(self) -> str:
        """``unit:line`` or ``unit:line $VAR from file:line``."""
        if not self.variables:
            return str(self.origin)
        via = ", ".join(f"${v.name} from {v.origin}" for v in self.variables)
        return f"{self.origin} ({via})"


def expand_command(command: ExecCommand, variables: Mapping[str, EnvVar]) -> list[Arg]:
    """The argv systemd executes: ``$VAR`` words split, ``${VAR}`` and ``$$`` replaced."""
    argv: list[Arg] = []
    for word in command.words:
        text = word.text
        if text.startswith("$") and text[1:2] not in ("{", "$"):
            env = variables.get(text[1:])
            if env is None:
                continue  # unknown variable: zero words
            for part in split_words(env.value, cunescape=False, relax=True):
                argv.append(Arg(part.value, word.origin, (env,)))
            continue
        used: list[EnvVar] = []

        def substitute(match: re.Match[str], used: list[EnvVar] = used) -> str:
            if match.group(0) == "$$":
                return "$"
            env = variables.get(match.group(1))
            if env is None:
                return ""
            used.append(env)
            return env.value

        expanded = re.sub(r"\$\$|\$\{([^}]*)\}", substitute, text)
        argv.append(Arg(expanded, word.origin, tuple(used)))
    return argv


def service_refusals(unit: Unit, commands: Sequence[ExecCommand]) -> list[str]:
    """What systemd 219 logs when it refuses to load the service, for these ExecStart commands."""
    service_type = unit.last("Service", "Type")
    kind = service_type.value if service_type else "simple"
    problems: list[str] = []
    if len(commands) > 1 and kind != "oneshot":
        problems.append(
            f"{unit.name} has more than one ExecStart= setting, which is only allowed for "
            "Type=oneshot services. Refusing."
        )
    if not commands and not unit.list_setting("Service", "ExecStop"):
        problems.append(f"{unit.name} lacks both ExecStart= and ExecStop= setting. Refusing.")
    return problems
