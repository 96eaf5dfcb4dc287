"""doctor.parse.systemd: one test per rule of systemd's unit, drop-in, environment and ExecStart
handling (systemd.syntax(7), systemd.exec(5), systemd.service(5), systemd.unit(5)).

Units are read through a small in-memory reader (node paths → text), the same interface
``NodeFacts`` offers; one test reads a real directory tree through ``LiveNodeFacts``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from doctor.facts.node import LiveNodeFacts
from doctor.parse.systemd import (
    Origin,
    UnitSyntaxError,
    exec_commands,
    expand_command,
    find_unit_files,
    load_unit,
    parse_env_file,
    parse_unit_text,
    service_environment,
    service_refusals,
    split_words,
)
from tests.conftest import BUNDLES

VENDOR = "/usr/lib/systemd/system/docker.service"
ETC_D = "/etc/systemd/system/docker.service.d"


class Tree:
    """Node files in memory: absolute path → text; symlinks as path → target."""

    def __init__(self, files: dict[str, str], links: dict[str, str] | None = None) -> None:
        self.files = files
        self.links = links or {}

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :] for p in [*self.files, *self.links] if p.startswith(prefix)}
        return sorted(n for n in names if "/" not in n)

    def readlink(self, path: str) -> str | None:
        return self.links.get(path)


def argv_of(files: dict[str, str], links: dict[str, str] | None = None) -> list[str]:
    tree = Tree(files, links)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    env = service_environment(unit, tree)
    (command,) = exec_commands(unit)
    return [arg.value for arg in expand_command(command, env.variables)]


def values(directives: list, key: str) -> list[str]:  # type: ignore[type-arg]
    return [d.value for d in directives if d.key == key]


# -- unit file syntax --------------------------------------------------------------------


def test_comments_and_whitespace_around_equals() -> None:
    text = "[Service]\n# a comment\n; another\n  Type = notify  \nKillMode=process\n"
    directives = parse_unit_text(text, VENDOR)
    assert [(d.key, d.value, d.origin.line) for d in directives] == [
        ("Type", "notify", 4),
        ("KillMode", "process", 5),
    ]


def test_continuation_backslash_becomes_space_and_words_keep_their_line() -> None:
    text = "[Service]\nExecStart=/usr/bin/dockerd \\\n          --debug \\\n          $OPTIONS\n"
    (directive,) = parse_unit_text(text, VENDOR)
    assert directive.value == "/usr/bin/dockerd  --debug  $OPTIONS"
    assert directive.origin == Origin(VENDOR, 2)
    assert directive.origin_at(directive.value.index("$OPTIONS")) == Origin(VENDOR, 4)


def test_continuation_without_space_before_backslash() -> None:
    # docker 1.13.1-53: "$INSECURE_REGISTRY\" then "\t  $REGISTRIES"
    text = "[Service]\nExecStart=/usr/bin/dockerd-current $INSECURE_REGISTRY\\\n\t  $REGISTRIES\n"
    assert argv_of({VENDOR: text}) == ["/usr/bin/dockerd-current"]
    files = {
        VENDOR: "[Service]\nEnvironment=INSECURE_REGISTRY=--a REGISTRIES=--b\n"
        + text.split("\n", 1)[1],
    }
    assert argv_of(files) == ["/usr/bin/dockerd-current", "--a", "--b"]


def test_centos_113_unit_tab_line_is_part_of_execstart() -> None:
    unit = BUNDLES / "docker-1.13-centos/host/usr/lib/systemd/system/docker.service"
    text = unit.read_text()
    assert "\n\t  $REGISTRIES\n" in text  # the verbatim TAB + two spaces line
    directives = parse_unit_text(text, VENDOR)
    (execstart,) = [d for d in directives if d.key == "ExecStart"]
    assert execstart.value.endswith("$REGISTRIES")
    assert execstart.origin_at(execstart.value.index("$REGISTRIES")).line == 31
    assert [d.key for d in directives].count("ExecReload") == 1  # the next line is its own


def test_comment_lines_inside_a_continuation_are_skipped() -> None:
    text = "[Service]\nExecStart=/bin/dockerd \\\n# --debug \\\n  --iptables=false\n"
    (directive,) = parse_unit_text(text, VENDOR)
    assert split_words(directive.value)[-1].value == "--iptables=false"
    assert "#" not in directive.value


def test_escaped_backslash_at_end_is_not_a_continuation() -> None:
    text = "[Service]\nExecStart=/bin/echo a\\\\\nType=oneshot\n"
    directives = parse_unit_text(text, VENDOR)
    assert [d.key for d in directives] == ["ExecStart", "Type"]


def test_truncated_unit_ending_inside_a_continuation_is_an_error() -> None:
    with pytest.raises(UnitSyntaxError) as caught:
        parse_unit_text("[Service]\nExecStart=/usr/bin/dockerd \\\n  $OPTIONS \\", VENDOR)
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{VENDOR}:2: file ends inside a continued line")


def test_invalid_section_header_and_missing_equals_are_errors() -> None:
    with pytest.raises(UnitSyntaxError, match=r":1: invalid section header '\[Service'"):
        parse_unit_text("[Service\nType=notify\n", VENDOR)
    with pytest.raises(UnitSyntaxError, match=r":2: missing '='"):
        parse_unit_text("[Service]\nthis is not a setting\n", VENDOR)


def test_assignment_outside_a_section_is_ignored() -> None:
    directives = parse_unit_text("Type=simple\n[Service]\nType=notify\n", VENDOR)
    assert [(d.section, d.value) for d in directives] == [("Service", "notify")]


# -- words and quoting -------------------------------------------------------------------


def test_split_words_quotes_and_escapes() -> None:
    words = split_words(r"""a "b c" 'd e' f"g h"i j\ k "\x41\n" \$x""")
    # "\$" is no escape in systemd (a literal dollar in ExecStart= is "$$")
    assert [w.value for w in words] == ["a", "b c", "d e", "fg hi", "j k", "A\n", "\\$x"]
    with pytest.raises(ValueError, match='unterminated " quote'):
        split_words('--label "env=lab')
    assert [w.value for w in split_words('--label "env=lab', relax=True)] == [
        "--label",
        "env=lab",
    ]


# -- unit lookup and drop-ins ------------------------------------------------------------


def test_etc_unit_replaces_the_vendor_unit_completely() -> None:
    files = {
        VENDOR: "[Service]\nEnvironment=A=vendor\nExecStart=/usr/bin/dockerd --vendor\n",
        "/etc/systemd/system/docker.service": "[Service]\nExecStart=/usr/bin/dockerd --etc\n",
    }
    unit = load_unit("docker.service", Tree(files))
    assert unit is not None and unit.fragment == "/etc/systemd/system/docker.service"
    assert argv_of(files) == ["/usr/bin/dockerd", "--etc"]
    assert unit.assignments("Service", "Environment") == []


def test_lib_is_used_when_usr_lib_has_no_unit() -> None:
    files = {"/lib/systemd/system/docker.service": "[Service]\nExecStart=/usr/bin/dockerd\n"}
    fragment, dropins = find_unit_files("docker.service", Tree(files))
    assert fragment == "/lib/systemd/system/docker.service" and dropins == []


def test_dropins_apply_in_name_order_whatever_the_directory() -> None:
    files = {
        VENDOR: "[Service]\nEnvironment=A=unit\n",
        "/usr/lib/systemd/system/docker.service.d/50-vendor.conf": "[Service]\nEnvironment=A=50\n",
        f"{ETC_D}/10-etc.conf": "[Service]\nEnvironment=A=10\n",
        "/run/systemd/system/docker.service.d/90-run.conf": "[Service]\nEnvironment=A=90\n",
    }
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    assert [p.rsplit("/", 1)[1] for p in unit.dropins] == [
        "10-etc.conf",
        "50-vendor.conf",
        "90-run.conf",
    ]
    assert service_environment(unit, tree).variables["A"].value == "90"


def test_a_dropin_in_etc_hides_the_same_name_below() -> None:
    files = {
        VENDOR: "[Service]\nExecStart=/usr/bin/dockerd\n",
        "/usr/lib/systemd/system/docker.service.d/proxy.conf": "[Service]\nEnvironment=P=vendor\n",
        f"{ETC_D}/proxy.conf": "[Service]\nEnvironment=P=admin\n",
    }
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None and unit.dropins == (f"{ETC_D}/proxy.conf",)
    assert service_environment(unit, tree).variables["P"].value == "admin"


def test_only_conf_files_are_dropins() -> None:
    files = {VENDOR: "[Service]\n", f"{ETC_D}/a.conf.rpmsave": "[Service]\nType=oneshot\n"}
    assert load_unit("docker.service", Tree(files)).dropins == ()  # type: ignore[union-attr]


def test_unit_linked_to_dev_null_is_masked() -> None:
    unit = load_unit(
        "docker.service",
        Tree({VENDOR: "[Service]\nExecStart=/usr/bin/dockerd\n"}),
    )
    assert unit is not None and not unit.masked
    masked = load_unit(
        "docker.service",
        Tree({VENDOR: "[Service]\n"}, {"/etc/systemd/system/docker.service": "/dev/null"}),
    )
    assert masked is not None and masked.masked and masked.directives == ()


def test_real_tree_through_live_node_facts(tmp_path: Path) -> None:
    """Relative and absolute links are followed inside --root, not on the host."""
    unit_dir = tmp_path / "usr/lib/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "docker.service").write_text("[Service]\nExecStart=/usr/bin/dockerd --a\n")
    etc = tmp_path / "etc/systemd/system/docker.service.d"
    etc.mkdir(parents=True)
    (tmp_path / "etc/kd.conf").write_text("[Service]\nEnvironment=X=1\n")
    os.symlink("/etc/kd.conf", etc / "x.conf")
    node = LiveNodeFacts(tmp_path)
    unit = load_unit("docker.service", node)
    assert unit is not None
    assert service_environment(unit, node).variables["X"].value == "1"


# -- Environment= --------------------------------------------------------------------------


def test_environment_quoting_from_the_man_page() -> None:
    files = {VENDOR: '[Service]\nEnvironment="VAR1=word1 word2" VAR2=word3 "VAR3=$word 5 6"\n'}
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    variables = service_environment(unit, tree).variables
    assert {k: v.value for k, v in variables.items()} == {
        "VAR1": "word1 word2",
        "VAR2": "word3",
        "VAR3": "$word 5 6",
    }


def test_environment_later_wins_empty_resets_and_percent_is_escaped() -> None:
    text = (
        "[Service]\nEnvironment=A=1 B=1\nEnvironment=A=2\n"
        "Environment=\nEnvironment=C=3 D=100%%\nEnvironment=not-a-name=x =y\n"
    )
    tree = Tree({VENDOR: text})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    variables = service_environment(unit, tree).variables
    assert {k: v.value for k, v in variables.items()} == {"C": "3", "D": "100%"}
    assert variables["C"].origin == Origin(VENDOR, 5)


# -- EnvironmentFile= ----------------------------------------------------------------------


def test_environment_files_in_order_override_environment_and_dash_allows_missing() -> None:
    files = {
        VENDOR: (
            "[Service]\nEnvironmentFile=-/etc/sysconfig/missing\n"
            "EnvironmentFile=/etc/sysconfig/one\nEnvironmentFile=-/etc/sysconfig/two\n"
            "Environment=A=env B=env C=env\n"
        ),
        "/etc/sysconfig/one": "A=one\nB=one\n",
        "/etc/sysconfig/two": "B=two\n",
    }
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    env = service_environment(unit, tree)
    assert {k: v.value for k, v in env.variables.items()} == {"A": "one", "B": "two", "C": "env"}
    assert env.variables["B"].origin == Origin("/etc/sysconfig/two", 1)
    assert env.missing_required == []
    assert (env.files[0].path, env.files[0].loaded) == ("/etc/sysconfig/missing", False)


def test_missing_environment_file_without_dash_is_reported() -> None:
    tree = Tree({VENDOR: "[Service]\nEnvironmentFile=/etc/sysconfig/docker\n"})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    (missing,) = service_environment(unit, tree).missing_required
    assert missing.path == "/etc/sysconfig/docker" and missing.directive.origin.line == 2


def test_empty_environment_file_assignment_resets_the_list() -> None:
    files = {
        VENDOR: "[Service]\nEnvironmentFile=-/etc/sysconfig/docker\nExecStart=/usr/bin/dockerd\n",
        f"{ETC_D}/no-sysconfig.conf": "[Service]\nEnvironmentFile=\n",
        "/etc/sysconfig/docker": "OPTIONS=--debug\n",
    }
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    assert service_environment(unit, tree).files == ()


def test_environment_file_glob() -> None:
    files = {
        VENDOR: "[Service]\nEnvironmentFile=-/etc/docker.env.d/*.env\n",
        "/etc/docker.env.d/b.env": "B=2\n",
        "/etc/docker.env.d/a.env": "A=1\nB=1\n",
        "/etc/docker.env.d/c.txt": "C=3\n",
    }
    tree = Tree(files)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    variables = service_environment(unit, tree).variables
    assert {k: v.value for k, v in variables.items()} == {"A": "1", "B": "2"}


def test_centos_sysconfig_shell_lines_are_ignored_and_indented_assignment_is_set() -> None:
    text = (BUNDLES / "docker-1.12-centos/host/etc/sysconfig/docker").read_text()
    found = {
        v.name: (v.value, v.origin.line) for v in parse_env_file(text, "/etc/sysconfig/docker")
    }
    assert found["OPTIONS"] == (
        "--selinux-enabled --log-driver=journald --signature-verification=false",
        4,
    )
    assert found["DOCKER_CERT_PATH"] == ("/etc/docker", 6)  # indented, inside "if … fi"
    assert found["INSECURE_REGISTRY"] == ("--insecure-registry nexus.lab:5000", 25)
    assert "fi" not in found and "if" not in found
    assert not any(name.startswith("ADD_REGISTRY") for name in found)  # commented out


def test_env_file_quoting_rules() -> None:
    text = (
        "A='single $X \\n'\n"  # single quotes: everything literal
        'B="double \\"q\\" \\$ \\n"\n'  # \" \$ unescaped, \n kept as backslash-n
        "C=  unquoted value   \n"  # leading/trailing blanks dropped
        "D=x # not a comment\n"
        "E=line\\\ncontinued\n"
        'F="multi\nline"\n'
        "G='a' 'b'\n"
        "   ; comment\n"
        "H\n"  # no '=': dropped
        "BAD NAME=1\n"
        "I=\n"
        "J=last"
    )
    found = {v.name: v.value for v in parse_env_file(text, "/f")}
    assert found == {
        "A": "single $X \\n",
        "B": 'double "q" $ \\n',
        "C": "unquoted value",
        "D": "x # not a comment",
        "E": "linecontinued",
        "F": "multi\nline",
        "G": "ab",
        "I": "",
        "J": "last",
    }
    lines = {v.name: v.origin.line for v in parse_env_file(text, "/f")}
    assert lines["E"] == 5 and lines["F"] == 7 and lines["J"] == 14


def test_env_file_with_crlf_line_ends() -> None:
    found = {v.name: v.value for v in parse_env_file("A=1\r\nB='2'\r\n", "/f")}
    assert found == {"A": "1", "B": "2"}


# -- ExecStart= ----------------------------------------------------------------------------


def test_dollar_var_splits_into_words_with_quotes_respected() -> None:
    files = {
        VENDOR: "[Service]\nEnvironmentFile=/etc/sysconfig/docker\n"
        "ExecStart=/usr/bin/dockerd $OPTIONS --x\n",
        "/etc/sysconfig/docker": "OPTIONS='--label \"env=a b\" --debug'\n",
    }
    assert argv_of(files) == ["/usr/bin/dockerd", "--label", "env=a b", "--debug", "--x"]


def test_braced_var_is_one_word_and_unknown_vars_are_empty() -> None:
    files = {
        VENDOR: '[Service]\nEnvironment="OPTS=--a --b"\n'
        "ExecStart=/usr/bin/dockerd ${OPTS} --root=${UNSET}/x $UNSET ${UNSET} $$HOME\n",
    }
    assert argv_of(files) == ["/usr/bin/dockerd", "--a --b", "--root=/x", "", "$HOME"]


def test_expanded_args_carry_the_variable_and_its_file_line() -> None:
    bundle = BUNDLES / "docker-1.12-centos/host"

    class Bundle(Tree):
        def read_text(self, path: str) -> str | None:
            file = bundle / path.lstrip("/")
            return file.read_text() if file.is_file() else None

    tree = Bundle({})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    (command,) = exec_commands(unit)
    args = expand_command(command, service_environment(unit, tree).variables)
    registry = next(a for a in args if a.value == "nexus.lab:5000")
    assert registry.origin == Origin(VENDOR, 28)  # the "$INSECURE_REGISTRY" line
    assert registry.provenance() == (
        f"{VENDOR}:28 ($INSECURE_REGISTRY from /etc/sysconfig/docker:25)"
    )
    storage = [
        a.value for a in args if a.variables and a.variables[0].name == "DOCKER_STORAGE_OPTIONS"
    ]
    assert storage == ["--storage-driver", "overlay2"]  # trailing space inside the quotes


def test_empty_execstart_resets_and_a_second_one_is_refused() -> None:
    vendor = "[Service]\nType=notify\nExecStart=/usr/bin/dockerd -H fd://\n"
    reset = {
        VENDOR: vendor,
        f"{ETC_D}/o.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd\n",
    }
    tree = Tree(reset)
    unit = load_unit("docker.service", tree)
    assert unit is not None
    assert [c.template for c in exec_commands(unit)] == ["/usr/bin/dockerd"]
    assert service_refusals(unit, exec_commands(unit)) == []

    tree = Tree({VENDOR: vendor, f"{ETC_D}/o.conf": "[Service]\nExecStart=/usr/bin/dockerd\n"})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    assert service_refusals(unit, exec_commands(unit)) == [
        "docker.service has more than one ExecStart= setting, which is only allowed for "
        "Type=oneshot services. Refusing."
    ]


def test_oneshot_may_have_several_commands_and_no_execstart_is_refused() -> None:
    tree = Tree({VENDOR: "[Service]\nType=oneshot\nExecStart=/bin/a ; /bin/b\nExecStart=/bin/c\n"})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    commands = exec_commands(unit)
    assert [c.words[0].text for c in commands] == ["/bin/a", "/bin/b", "/bin/c"]
    assert service_refusals(unit, commands) == []
    empty = load_unit("docker.service", Tree({VENDOR: "[Service]\nType=notify\n"}))
    assert empty is not None
    assert service_refusals(empty, []) == [
        "docker.service lacks both ExecStart= and ExecStop= setting. Refusing."
    ]


def test_exec_prefixes_and_specifiers() -> None:
    tree = Tree(
        {VENDOR: "[Service]\nExecStart=-/usr/bin/dockerd --label unit=%n --label p=100%%\n"}
    )
    unit = load_unit("docker.service", tree)
    assert unit is not None
    (command,) = exec_commands(unit)
    assert command.prefixes == "-"
    assert [w.text for w in command.words] == [
        "/usr/bin/dockerd",
        "--label",
        "unit=docker.service",
        "--label",
        "p=100%",
    ]
    assert command.template == "-/usr/bin/dockerd --label unit=%n --label p=100%%"


def test_unterminated_quote_in_execstart_is_an_error_naming_file_and_line() -> None:
    tree = Tree({VENDOR: '[Service]\nType=notify\nExecStart=/usr/bin/dockerd --label "env=lab\n'})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    with pytest.raises(UnitSyntaxError) as caught:
        exec_commands(unit)
    assert str(caught.value).startswith(f'{VENDOR}:3: ExecStart= has unterminated " quote')


def test_references_cover_both_forms() -> None:
    tree = Tree({VENDOR: "[Service]\nExecStart=/usr/bin/dockerd $A --x=${B} ${C}${D}\n"})
    unit = load_unit("docker.service", tree)
    assert unit is not None
    (command,) = exec_commands(unit)
    assert command.references() == {"A", "B", "C", "D"}
