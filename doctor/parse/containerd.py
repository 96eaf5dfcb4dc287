"""containerd's ``config.toml`` and the files its ``imports`` name, merged as containerd merges
them, every value with the file and line it comes from.

How containerd builds its configuration (``LoadConfig`` / ``mergeConfig`` in
``services/server/config/config.go`` for 1.x, ``cmd/containerd/server/config/config.go`` for
2.x):

- files are read breadth first: config.toml, then its ``imports`` in order, then theirs; a file
  already read is skipped (circular imports);
- ``imports`` entries: a relative path is relative to the importing file's directory; a glob
  (``*``) is expanded as written by containerd 1.x, so a relative glob is matched against the
  daemon's working directory (``/`` under systemd), and joined to the importing file's
  directory first by 2.x;
- lists (``disabled_plugins``, ``required_plugins``) are appended; other values override when
  the later file sets them to something non-empty (mergo ``WithOverride``);
- ``[plugins."<id>"]``: containerd 1.x **replaces the whole section** of a plugin that a later
  file also configures (1.7: "Replace entire sections instead of merging map's values";
  verified with Debian's containerd 1.6 in the tests); 2.x merges the sections key by key;
- config version: a file without ``version`` is version 1 (short plugin names such as ``cri``
  are migrated to ``io.containerd.grpc.v1.cri``); containerd 2.x migrates version 2 files to
  version 3 (the CRI keys move to ``io.containerd.cri.v1.runtime`` and
  ``io.containerd.cri.v1.images``); containerd 1.x does not know version 3 and ignores its
  ``io.containerd.cri.v1.*`` sections.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from doctor.parse.toml_lines import KeyPath, flatten, key_lines, line_of, load_toml, unflatten

CONFIG_PATH = "/etc/containerd/config.toml"
CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_RUNTIME_V3 = "io.containerd.cri.v1.runtime"
CRI_IMAGES_V3 = "io.containerd.cri.v1.images"
#: Keys that stay in io.containerd.grpc.v1.cri in config version 3 (the CRI gRPC server's own
#: settings); every other key there is a version 2 key (containerd 2.x: internal/cri/config).
CRI_V3_SERVER_KEYS = frozenset(
    {
        "disable_tcp_service",
        "stream_server_address",
        "stream_server_port",
        "stream_idle_timeout",
        "enable_tls_streaming",
        "x509_key_pair_streaming",
    }
)
#: Keys of io.containerd.grpc.v1.cri (version 2) that move to the images plugin in version 3;
#: the rest moves to the runtime plugin (containerd 2.x CRI config migration).
_V2_TO_IMAGES = {
    ("sandbox_image",): ("pinned_images", "sandbox"),
    ("registry",): ("registry",),
    ("image_decryption",): ("image_decryption",),
    ("max_concurrent_downloads",): ("max_concurrent_downloads",),
    ("image_pull_progress_timeout",): ("image_pull_progress_timeout",),
    ("stats_collect_period",): ("stats_collect_period",),
    ("containerd", "snapshotter"): ("snapshotter",),
    ("containerd", "discard_unpacked_layers"): ("discard_unpacked_layers",),
}
#: containerd's v1MigratePluginName table (version 1 short names).
_V1_PLUGIN_NAMES = {
    "cri": CRI_V2,
    "cgroups": "io.containerd.monitor.v1.cgroups",
    "linux": "io.containerd.runtime.v1.linux",
    "scheduler": "io.containerd.gc.v1.scheduler",
    "bolt": "io.containerd.metadata.v1.bolt",
    "task": "io.containerd.runtime.v2.task",
    "opt": "io.containerd.internal.v1.opt",
    "restart": "io.containerd.internal.v1.restart",
    "tracing": "io.containerd.internal.v1.tracing",
    "otlp": "io.containerd.tracing.processor.v1.otlp",
    "aufs": "io.containerd.snapshotter.v1.aufs",
    "btrfs": "io.containerd.snapshotter.v1.btrfs",
    "devmapper": "io.containerd.snapshotter.v1.devmapper",
    "native": "io.containerd.snapshotter.v1.native",
    "overlayfs": "io.containerd.snapshotter.v1.overlayfs",
    "zfs": "io.containerd.snapshotter.v1.zfs",
}
_LIST_KEYS = ("disabled_plugins", "required_plugins")
#: Top-level tables whose entries a later file replaces whole (mergeConfig's loops).
_REPLACED_BY_KEY = ("proxy_plugins", "stream_processors", "timeouts")
_VERSION = re.compile(r"(?<![\d.])v?(\d+)\.(\d+)(?:\.(\d+))?")


class FileReader(Protocol):
    """What the merge needs from the node (``doctor`` NodeFacts or a test tree)."""

    def read_text(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...


def v1_plugin_name(name: str) -> str:
    """containerd's ``v1MigratePluginName``: a short version 1 plugin name as its full URI."""
    if "." in name:
        return name
    if name in _V1_PLUGIN_NAMES:
        return _V1_PLUGIN_NAMES[name]
    if name.endswith("-service"):
        return f"io.containerd.service.v1.{name}"
    return f"io.containerd.grpc.v1.{name}"


def parse_containerd_version(text: str) -> tuple[int, int, int] | None:
    """``containerd --version``: "containerd github.com/containerd/containerd/v2 v2.1.4 …"."""
    for word in text.split()[1:]:
        match = _VERSION.match(word)
        if match:
            return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    return None


@dataclass(frozen=True)
class Located:
    """A value and where it is set (file and line)."""

    value: Any
    file: str
    line: int | None
    key: KeyPath = ()

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class ConfigFile:
    """One file of the configuration as written."""

    path: str
    text: str
    data: dict[str, Any]
    lines: dict[KeyPath, int]
    imported_by: str | None = None

    @property
    def version(self) -> int:
        """The file's config version; a file without ``version`` is version 1."""
        value = self.data.get("version")
        return value if isinstance(value, int) and value > 0 else 1

    def line(self, path: KeyPath) -> int | None:
        """The key's line; for a table without its own header, its first key's line."""
        if path in self.lines:
            return self.lines[path]
        inside = [n for p, n in self.lines.items() if p[: len(path)] == path]
        return min(inside) if inside else line_of(self.lines, path)

    def located(self, path: KeyPath, value: Any) -> Located:
        return Located(value, self.path, self.line(path), path)


@dataclass(frozen=True)
class ReplacedSection:
    """containerd 1.x: a later file's plugin section replaced an earlier one whole."""

    plugin: str
    winner: Located  # the later file's section header
    lost: tuple[Located, ...]  # the earlier file's settings that no longer apply


@dataclass(frozen=True)
class MisplacedKey:
    """A key of the other config version: containerd ignores it without an error."""

    located: Located
    file_version: int
    belongs_to: int  # the config version the key is written for


@dataclass(frozen=True)
class RelativeGlob:
    """An ``imports`` glob that containerd 1.x matches against its working directory."""

    pattern: str
    at: Located
    resolved: str


@dataclass
class ContainerdConfig:
    """The merged configuration: leaves by key path (in the version containerd uses)."""

    files: list[ConfigFile]
    #: 2 for containerd 1.x, 3 for 2.x (the version containerd migrates every file to).
    target_version: int
    leaves: dict[KeyPath, Located] = field(default_factory=dict)
    disabled_plugins: list[Located] = field(default_factory=list)
    replaced: list[ReplacedSection] = field(default_factory=list)
    misplaced: list[MisplacedKey] = field(default_factory=list)
    relative_globs: list[RelativeGlob] = field(default_factory=list)
    missing_imports: list[Located] = field(default_factory=list)

    @property
    def root(self) -> ConfigFile | None:
        return self.files[0] if self.files else None

    def get(self, path: KeyPath) -> Located | None:
        return self.leaves.get(path)

    def under(self, prefix: KeyPath) -> dict[KeyPath, Located]:
        """Leaves below ``prefix``, keyed by the rest of their path."""
        size = len(prefix)
        return {p[size:]: v for p, v in self.leaves.items() if p[:size] == prefix and p != prefix}

    def section(self, prefix: KeyPath) -> Located | None:
        """Where the table ``prefix`` is set: its leaf or its first key."""
        exact = self.leaves.get(prefix)
        if exact is not None:
            return exact
        inside = [v for p, v in self.leaves.items() if p[: len(prefix)] == prefix]
        return inside[0] if inside else None

    def as_document(self) -> dict[str, Any]:
        """The merged values as a TOML-shaped dict (for comparing with ``config dump``)."""
        leaves = {p: v.value for p, v in self.leaves.items()}
        if self.disabled_plugins:
            leaves[("disabled_plugins",)] = [d.value for d in self.disabled_plugins]
        return unflatten(leaves)


def _empty(value: Any) -> bool:
    """mergo's "empty": zero values never override (false, 0, "", empty list or table)."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def _migrate_leaf(path: KeyPath, file_version: int, target: int) -> KeyPath | None:
    """Where containerd puts a leaf of a file of ``file_version`` (None: ignored)."""
    if path[:1] != ("plugins",) or len(path) < 2:
        return path
    plugin = path[1]
    if file_version == 1 and target == 2 and "." in plugin:
        return None  # containerd 1.x reads a version 1 file's plugins by short id ("cri")
    if file_version == 1:
        plugin = v1_plugin_name(plugin)
    rest = path[2:]
    if target == 2:
        if plugin in (CRI_RUNTIME_V3, CRI_IMAGES_V3):
            return None  # containerd 1.x has no such plugins
        return ("plugins", plugin, *rest)
    if plugin == CRI_V2 and file_version < 3 and rest and rest[0] not in CRI_V3_SERVER_KEYS:
        for old, new in _V2_TO_IMAGES.items():
            if rest[: len(old)] == old:
                return ("plugins", CRI_IMAGES_V3, *new, *rest[len(old) :])
        return ("plugins", CRI_RUNTIME_V3, *rest)
    if plugin == CRI_V2 and file_version >= 3 and rest and rest[0] not in CRI_V3_SERVER_KEYS:
        return None  # a version 2 key in a version 3 file: ignored
    return ("plugins", plugin, *rest)


def _misplaced(config: ConfigFile, target: int) -> list[MisplacedKey]:
    plugins = config.data.get("plugins")
    if not isinstance(plugins, dict):
        return []
    found: list[MisplacedKey] = []
    version = config.version
    for name, section in plugins.items():
        full = v1_plugin_name(name) if version == 1 else name
        if version >= 3 and full == CRI_V2 and isinstance(section, dict):
            for key in section:
                if key not in CRI_V3_SERVER_KEYS:
                    key_path: KeyPath = ("plugins", name, key)
                    found.append(MisplacedKey(config.located(key_path, section[key]), 3, 2))
        if version == 1 and "." in name and target == 2:
            found.append(MisplacedKey(config.located(("plugins", name), section), 1, 2))
        if version < 3 and full in (CRI_RUNTIME_V3, CRI_IMAGES_V3):
            found.append(MisplacedKey(config.located(("plugins", name), section), version, 3))
    return found


def _resolve_imports(
    reader: FileReader, config: ConfigFile, containerd_major: int, result: ContainerdConfig
) -> list[str]:
    imports = config.data.get("imports")
    if not isinstance(imports, list):
        return []
    out: list[str] = []
    base = posixpath.dirname(config.path)
    for entry in imports:
        if not isinstance(entry, str):
            continue
        at = config.located(("imports",), entry)
        path = posixpath.normpath(entry)
        if "*" in path:
            if not path.startswith("/"):
                if containerd_major >= 2:
                    path = posixpath.join(base, path)
                else:
                    resolved = posixpath.join("/", path)
                    result.relative_globs.append(RelativeGlob(entry, at, resolved))
                    path = resolved
            directory, pattern = posixpath.split(path)
            names = [n for n in reader.listdir(directory) if fnmatch.fnmatchcase(n, pattern)]
            out.extend(posixpath.join(directory, n) for n in sorted(names))
        else:
            if not path.startswith("/"):
                path = posixpath.join(base, path)
            out.append(path)
    return out


def load_config(
    reader: FileReader,
    containerd_version: tuple[int, int, int] | None,
    path: str = CONFIG_PATH,
) -> ContainerdConfig | None:
    """config.toml and its imports merged; None when config.toml does not exist.

    ``containerd_version`` decides the merge (1.x or 2.x); when unknown it is taken from the
    root file's version (3: 2.x, else 1.x). Raises :class:`TomlSyntaxError` on invalid TOML.
    """
    text = reader.read_text(path)
    if text is None:
        return None
    root = ConfigFile(path, text, load_toml(text, path), key_lines(text))
    if containerd_version is not None:
        major = containerd_version[0]
    else:
        major = 2 if root.version >= 3 else 1
    result = ContainerdConfig([], target_version=3 if major >= 2 else 2)
    pending: list[tuple[str, str | None, Located | None]] = [(path, None, None)]
    loaded: set[str] = set()
    first = True
    while pending:
        current, parent, at = pending.pop(0)
        if current in loaded:
            continue
        if first:
            config = root
            first = False
        else:
            body = reader.read_text(current)
            if body is None:
                # containerd fails to start: "open <file>: no such file or directory"
                if at is not None:
                    result.missing_imports.append(at)
                continue
            config = ConfigFile(current, body, load_toml(body, current), key_lines(body), parent)
        loaded.add(current)
        result.files.append(config)
        result.misplaced.extend(_misplaced(config, result.target_version))
        _merge(result, config)
        for imported in _resolve_imports(reader, config, major, result):
            pending.append((imported, config.path, config.located(("imports",), imported)))
    return result


def _merge(result: ContainerdConfig, config: ConfigFile) -> None:
    version = config.version
    target = result.target_version
    for key in _LIST_KEYS:
        values = config.data.get(key)
        if not isinstance(values, list):
            continue
        for value in values:
            if key == "disabled_plugins" and not any(
                d.value == value for d in result.disabled_plugins
            ):
                result.disabled_plugins.append(config.located((key,), value))
    incoming: dict[KeyPath, Located] = {}
    for leaf, value in flatten(config.data).items():
        if leaf[0] in ("version", "imports", *_LIST_KEYS):
            continue
        target_path = _migrate_leaf(leaf, version, target)
        if target_path is None:
            continue
        incoming[target_path] = config.located(leaf, value)
    # Sections a later file replaces whole: plugins (containerd 1.x) and mergeConfig's maps.
    replace_depth: dict[str, int] = {key: 2 for key in _REPLACED_BY_KEY}
    if target == 2:
        replace_depth["plugins"] = 2
    sections = {p[:2] for p in incoming if len(p) >= 2 and p[0] in replace_depth}
    for section in sorted(sections):
        old = {p: v for p, v in result.leaves.items() if p[:2] == section}
        if not old:
            continue
        new_keys = {p for p in incoming if p[:2] == section}
        lost = tuple(v for p, v in old.items() if p not in new_keys and not _empty(v.value))
        for p in old:
            del result.leaves[p]
        if lost and section[0] == "plugins":
            header = config.located(section, None)
            result.replaced.append(ReplacedSection(section[1], header, lost))
    for target_path, located in incoming.items():
        existing = result.leaves.get(target_path)
        if existing is not None and _empty(located.value):
            continue
        # A table set as a leaf (``{}``) and keys under it: keep the keys.
        result.leaves[target_path] = located
        if isinstance(located.value, dict):
            continue
        for depth in range(1, len(target_path)):
            prefix = target_path[:depth]
            if prefix in result.leaves and isinstance(result.leaves[prefix].value, dict):
                del result.leaves[prefix]


def sorted_unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))
