"""kube-proxy: where its proxy mode is set, and the proxy-mode patch (the lab-22 lab's
workaround, done properly).

The lab-22 kubeadm lab (kubeadm 1.6) worked around a broken Service path with
``kubectl get ds -l component=kube-proxy -o json | jq '…command |= .+ ["--proxy-mode=userspace"]'
| kubectl apply -f - && kubectl delete pods -l component=kube-proxy``. That appends a second
``--proxy-mode`` when one is already there, is silently ignored when kube-proxy reads a
``--config`` file (kubeadm ≥ 1.8: the mode lives in ConfigMap ``kube-proxy`` key ``config.conf``),
overwrites concurrent edits, and asks for ``userspace`` even where it was removed (v1.26).
This module reads where the mode really comes from and builds the patch of the right object:

* flag-based DaemonSets: ``--proxy-mode`` replaced in place (``--proxy-mode=x`` or
  ``--proxy-mode x``, in ``command`` or ``args``; duplicates dropped) or appended once;
* ``--config`` DaemonSets: the ``mode:`` line of the ConfigMap's ``config.conf`` is changed (or
  inserted); every other byte of the YAML text is kept; the DaemonSet is not touched;

each patch preconditioned on the object's resourceVersion (409 → nothing is changed), the
previous object kept for rollback, then the kube-proxy pods restarted and awaited.

Reading helpers here are used by the checks ``cluster.kube-proxy`` and ``cluster.dns.kube-dns``;
nothing here changes anything until a fix's actions are applied by ``doctor.core.fixengine``.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.core.context import FixContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.facts.kube import CONFIGMAPS, DAEMONSETS, PODS, ApiError, KubeFacts
from fixes.kube import KubeStepFailed, KubeWriter, PatchObject, RestartPods

NAMESPACE = "kube-system"
NAME = "kube-proxy"
LABELS = ("component=kube-proxy", "k8s-app=kube-proxy")
FIX_ID = "cluster.kube-proxy.proxy-mode"
#: What the kube-proxy flag accepts on Linux (kernelspace is Windows only).
KNOWN_MODES = ("userspace", "iptables", "ipvs", "nftables", "kernelspace")
#: userspace: deprecated in 1.23 (k/k#104631), removed in 1.26 (k/k#112133).
USERSPACE_DEPRECATED = (1, 23)
USERSPACE_REMOVED = (1, 26)
#: nftables: alpha 1.29 (feature gate NFTablesProxyMode), beta 1.31 (on by default), GA 1.33.
NFTABLES_ALPHA = (1, 29)
NFTABLES_BETA = (1, 31)
NFTABLES_GA = (1, 33)
#: ipvs: GA in 1.11 (alpha 1.8 and beta 1.9-1.10 behind the SupportIPVSProxyMode gate).
IPVS_GA = (1, 11)
DEFAULT_MODE = "iptables"  # what an empty mode means on Linux
WAIT_SECONDS = 120.0

Version = tuple[int, int]


def version_text(version: Version | None) -> str:
    return f"v{version[0]}.{version[1]}" if version else "unknown"


# -- where the mode is set ------------------------------------------------------------------


@dataclass(frozen=True)
class FlagHit:
    """One ``--proxy-mode`` on the container's command line."""

    field: str  # "command" or "args"
    index: int
    joined: bool  # "--proxy-mode=x" (True) or "--proxy-mode", "x" (False)
    value: str

    def describe(self, container: str) -> str:
        token = f"--proxy-mode={self.value}" if self.joined else f"--proxy-mode {self.value}"
        return f"container {container} {self.field}[{self.index}] `{token}`"


@dataclass(frozen=True)
class ConfigFile:
    """The KubeProxyConfiguration kube-proxy reads with ``--config``."""

    path: str  # as given to --config
    configmap: str | None  # the ConfigMap volume mounted there (None: not a ConfigMap)
    key: str
    object: dict[str, Any] | None  # the ConfigMap, None when it does not exist
    text: str | None  # the key's text, None when the ConfigMap lacks the key
    mode_line: int | None  # 1-based line of the top-level `mode:`, None when absent
    mode_raw: str | None  # the line as written
    mode: str | None  # parsed value ("" = default); None when the key or text is missing

    @property
    def where(self) -> str:
        name = f"ConfigMap {NAMESPACE}/{self.configmap}" if self.configmap else self.path
        if self.mode_line is None:
            return f"{name} key {self.key} (no `mode:` line: default)"
        return f"{name} key {self.key} line {self.mode_line} `{self.mode_raw}`"


@dataclass(frozen=True)
class KubeProxySetup:
    """A kube-proxy DaemonSet and where its proxy mode comes from."""

    daemonset: dict[str, Any]
    container_index: int
    container_name: str
    argv: list[str]  # command + args as the container runs them
    shell_form: bool  # `sh -c "kube-proxy …"`: flags inside one string (not patchable)
    flags: list[FlagHit]
    config: ConfigFile | None  # set when kube-proxy runs with --config

    @property
    def name(self) -> str:
        return str(self.daemonset["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.daemonset["metadata"].get("namespace") or NAMESPACE)

    @property
    def resource_version(self) -> str:
        return str(self.daemonset["metadata"].get("resourceVersion", ""))

    @property
    def flag_mode(self) -> str | None:
        """The --proxy-mode the flag parser ends up with (the last one wins)."""
        return self.flags[-1].value if self.flags else None

    @property
    def flag_ignored(self) -> bool:
        """A --proxy-mode next to --config: kube-proxy ignores the flag."""
        return self.config is not None and bool(self.flags)

    @property
    def configured_mode(self) -> str:
        """The mode as written where kube-proxy takes it from ("" when unset)."""
        if self.config is not None:
            return self.config.mode or ""
        return self.flag_mode or ""

    @property
    def mode(self) -> str:
        """The mode in effect: an empty mode means iptables on Linux."""
        return self.configured_mode or DEFAULT_MODE

    @property
    def source(self) -> str:
        """Where the mode is set, for evidence: the flag or the ConfigMap key and line."""
        if self.config is not None:
            return self.config.where
        if self.flags:
            return f"DaemonSet {self.namespace}/{self.name} " + self.flags[-1].describe(
                self.container_name
            )
        return (
            f"DaemonSet {self.namespace}/{self.name} container {self.container_name}: "
            "no --proxy-mode flag (default)"
        )

    @property
    def selector(self) -> str:
        return daemonset_selector(self.daemonset)

    def evidence(self, version: Version | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "mode_configured": self.configured_mode or "(empty: default iptables)",
            "mode_source": self.source,
            "daemonset": f"{self.namespace}/{self.name}",
            "daemonset_resourceVersion": self.resource_version,
            "server_version": version_text(version),
        }
        if self.config is not None and self.config.object is not None:
            out["configmap_resourceVersion"] = str(
                self.config.object["metadata"].get("resourceVersion", "")
            )
        if self.flag_ignored:
            out["ignored_flag"] = self.flags[-1].describe(self.container_name)
        return out


def find_daemonset(cluster: KubeFacts) -> dict[str, Any] | None:
    """DaemonSet ``kube-proxy`` in kube-system, else the first one labelled as kube-proxy."""
    found = cluster.get(DAEMONSETS, NAMESPACE, NAME)
    if found is not None:
        return found
    for selector in LABELS:
        items = cluster.list_objects(DAEMONSETS, namespace=NAMESPACE, label_selector=selector)
        if items:
            return sorted(items, key=lambda d: str(d["metadata"].get("name")))[0]
    return None


def daemonset_selector(ds: dict[str, Any]) -> str:
    """The DaemonSet's pod selector as a label-selector string (matchLabels + expressions)."""
    spec = ds.get("spec") or {}
    selector = spec.get("selector") or {}
    labels = selector.get("matchLabels")
    expressions = selector.get("matchExpressions") or []
    if not labels and not expressions:  # extensions/v1beta1 defaulted it to the template labels
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    terms = [f"{k}={v}" for k, v in sorted((labels or {}).items())]
    for expr in expressions:
        key, op = expr.get("key"), expr.get("operator")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            terms.append(f"{key} in ({values})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)


def _container(ds: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    containers = ((ds.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers")
    if not isinstance(containers, list) or not containers:
        name = ds.get("metadata", {}).get("name")
        raise FactError(f"DaemonSet {name}: no containers in spec.template.spec")
    for index, container in enumerate(containers):
        if container.get("name") == NAME:
            return index, container
    for index, container in enumerate(containers):
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if any("kube-proxy" in str(a) for a in argv):
            return index, container
    return 0, containers[0]


def _shell_script(argv: list[str]) -> str | None:
    """The script of ``sh -c SCRIPT`` / ``bash -c SCRIPT`` when it starts kube-proxy."""
    for i, token in enumerate(argv[:-1]):
        if token == "-c" and i >= 1 and Path(argv[i - 1]).name in ("sh", "bash", "ash", "dash"):
            script = argv[i + 1]
            return script if "kube-proxy" in script else None
    return None


def _flag_hits(container: dict[str, Any]) -> list[FlagHit]:
    hits: list[FlagHit] = []
    for field_name in ("command", "args"):
        tokens = [str(t) for t in container.get(field_name) or []]
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token.startswith("--proxy-mode="):
                hits.append(FlagHit(field_name, i, True, token.split("=", 1)[1]))
            elif token == "--proxy-mode" and i + 1 < len(tokens):
                hits.append(FlagHit(field_name, i, False, tokens[i + 1]))
                i += 1
            i += 1
    return hits


def _tokens_value(tokens: list[str], flag: str) -> str | None:
    value = None
    for i, token in enumerate(tokens):
        if token.startswith(flag + "="):
            value = token.split("=", 1)[1]
        elif token == flag and i + 1 < len(tokens):
            value = tokens[i + 1]
    return value


def read_setup(cluster: KubeFacts, ds: dict[str, Any]) -> KubeProxySetup:
    """Where the DaemonSet's kube-proxy takes its mode from (reads the ConfigMap if needed)."""
    index, container = _container(ds)
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    script = _shell_script(argv)
    if script is not None:
        try:
            tokens = shlex.split(script)
        except ValueError as exc:
            name = ds["metadata"].get("name")
            raise FactError(f"DaemonSet {name}: shell command: {exc}") from exc
        value = _tokens_value(tokens, "--proxy-mode")
        flags = [FlagHit("command", len(argv) - 1, True, value)] if value is not None else []
    else:
        tokens = argv
        flags = _flag_hits(container)
    config_path = _tokens_value(tokens, "--config")
    config = _read_config(cluster, ds, container, config_path) if config_path else None
    return KubeProxySetup(
        daemonset=ds,
        container_index=index,
        container_name=str(container.get("name") or "?"),
        argv=argv,
        shell_form=script is not None,
        flags=flags,
        config=config,
    )


def _mounted_configmap(
    ds: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[str | None, str]:
    """The ConfigMap and key behind a path in the container (kubeadm: kube-proxy/config.conf)."""
    pod_spec = (ds.get("spec") or {}).get("template", {}).get("spec", {})
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if not mount_path or not (path == mount_path or path.startswith(mount_path + "/")):
            continue
        volume = volumes.get(mount.get("name")) or {}
        cm = volume.get("configMap")
        if not isinstance(cm, dict):
            continue
        if mount.get("subPath"):
            relative = str(mount["subPath"])
        else:
            relative = path[len(mount_path) :].lstrip("/")
        key = relative
        for item in cm.get("items") or []:
            if item.get("path") == relative:
                key = str(item.get("key"))
        return str(cm.get("name")), key
    return None, Path(path).name


_MODE_LINE = re.compile(
    r"^mode:(?P<sp>[ \t]*)(?P<value>\"[^\"]*\"|'[^']*'|[^#\s]*)(?P<rest>[ \t]*(?:#.*)?)$"
)


def _split_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _mode_lines(text: str) -> list[int]:
    """0-based indexes of top-level ``mode:`` lines."""
    out = []
    for i, line in enumerate(_split_lines(text)):
        if _MODE_LINE.match(line.rstrip("\r\n")):
            out.append(i)
    return out


def _read_config(
    cluster: KubeFacts, ds: dict[str, Any], container: dict[str, Any], path: str
) -> ConfigFile:
    name, key = _mounted_configmap(ds, container, path)
    if name is None:
        # Not a ConfigMap volume (a hostPath…): kubeadm's layout is the one we can read.
        return ConfigFile(path, None, key, None, None, None, None, None)
    obj = cluster.get(CONFIGMAPS, NAMESPACE, name)
    if obj is None:
        return ConfigFile(path, name, key, None, None, None, None, None)
    text = (obj.get("data") or {}).get(key)
    if not isinstance(text, str):
        return ConfigFile(path, name, key, obj, None, None, None, None)
    import yaml  # PyYAML comes with the kubernetes client; only needed here

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FactError(f"ConfigMap {NAMESPACE}/{name} key {key}: invalid YAML: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise FactError(f"ConfigMap {NAMESPACE}/{name} key {key}: not a YAML mapping")
    mode_value = doc.get("mode")
    mode = "" if mode_value is None else str(mode_value)
    lines = _mode_lines(text)
    line_no = lines[-1] + 1 if lines else None
    raw = _split_lines(text)[lines[-1]].rstrip("\r\n") if lines else None
    return ConfigFile(path, name, key, obj, text, line_no, raw, mode)


# -- which mode a server allows -------------------------------------------------------------


def mode_problem(mode: str, version: Version | None) -> tuple[str, str, str] | None:
    """(severity "fail"|"warn", short reason, explanation) when MODE is wrong for the server;
    None when the server runs it fine."""
    if mode not in KNOWN_MODES:
        return (
            "fail",
            f"{mode!r} is not a proxy mode",
            f"unknown proxy mode {mode!r}: kube-proxy accepts iptables, ipvs, nftables "
            "(userspace before v1.26); current versions refuse the configuration, old ones "
            "silently fall back to iptables",
        )
    if mode == "kernelspace":
        return (
            "fail",
            "kernelspace is Windows only",
            "kernelspace is the Windows proxier; Linux nodes cannot run it",
        )
    if mode == "userspace":
        if version is None:
            return (
                "warn",
                "userspace was removed in v1.26 and the server version is unknown",
                "userspace was removed in v1.26 (deprecated since v1.23) and the server version "
                "is unknown",
            )
        if version >= USERSPACE_REMOVED:
            return (
                "fail",
                "userspace was removed in v1.26",
                f"userspace was removed in v1.26 and the server is {version_text(version)}: "
                "kube-proxy refuses this mode and does not start (pods that are still running "
                "fail at their next restart)",
            )
        deprecated = (
            "deprecated since v1.23 and removed in v1.26"
            if version >= USERSPACE_DEPRECATED
            else "deprecated in v1.23 and removed in v1.26"
        )
        return (
            "warn",
            "userspace is deprecated",
            f"userspace is the legacy proxier ({deprecated}): every Service connection is "
            "copied through the kube-proxy process (slow, and a kube-proxy restart drops them); "
            "it is a workaround, not a configuration to keep — plan the move to iptables "
            "before upgrading",
        )
    if mode == "nftables" and version is not None and version < NFTABLES_BETA:
        if version >= NFTABLES_ALPHA:
            return (
                "fail",
                f"nftables is alpha on {version_text(version)}",
                f"nftables is alpha on {version_text(version)} (beta from v1.31): kube-proxy "
                "refuses it unless the NFTablesProxyMode feature gate is enabled",
            )
        return (
            "fail",
            f"nftables does not exist on {version_text(version)}",
            f"nftables does not exist on {version_text(version)} (new in v1.29)",
        )
    if mode == "ipvs" and version is not None and version < IPVS_GA:
        return (
            "warn",
            f"ipvs is not GA on {version_text(version)}",
            f"ipvs is not GA on {version_text(version)} (GA in v1.11): it needs the "
            "SupportIPVSProxyMode feature gate and the ip_vs kernel modules, and silently falls "
            "back to iptables without them",
        )
    return None


@dataclass(frozen=True)
class ModeChoice:
    """The mode a fix sets, and what was refused on the way."""

    mode: str
    requested: str | None
    refused: str | None = None  # why the requested mode was not used

    def title_note(self) -> str:
        return f" ({self.refused})" if self.refused else ""


def choose_mode(requested: str | None, default: str, version: Version | None) -> ModeChoice:
    """The target mode: what the user asked for (else DEFAULT) when the server runs it.

    A mode the server refuses (``userspace`` on ≥ 1.26 or on a server of unknown version,
    ``nftables`` before 1.31, unknown names) is refused and ``iptables`` offered instead
    (``nftables`` is named as the other choice from 1.33, where it is GA). A mode that runs
    but is not advisable (``userspace`` before 1.26, ``ipvs`` before 1.11) is the user's call.
    """
    wanted = requested or default
    problem = mode_problem(wanted, version)
    if problem is None or (problem[0] == "warn" and version is not None):
        return ModeChoice(wanted, requested)
    also = (
        " (nftables is GA there too: --proxy-mode nftables)"
        if version is not None and version >= NFTABLES_GA
        else ""
    )
    refused = f"--proxy-mode {wanted} refused: {problem[1]}; iptables instead{also}"
    return ModeChoice("iptables", requested, refused)


# -- the patch ------------------------------------------------------------------------------


class NotPatchable(Exception):
    """The mode cannot be changed safely by kdoctor; the message says what to do by hand."""


def set_config_mode(text: str, mode: str) -> tuple[str, int]:
    """TEXT with its top-level ``mode:`` set to MODE; every other byte kept. Returns the text
    and the 1-based line changed or inserted. Raises NotPatchable when that is not provable."""
    import yaml

    try:
        before = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NotPatchable(f"the configuration is not valid YAML: {exc}") from exc
    before = before if before is not None else {}
    if not isinstance(before, dict):
        raise NotPatchable("the configuration is not a YAML mapping")
    lines = _split_lines(text)
    found = _mode_lines(text)
    if len(found) > 1:
        raise NotPatchable("the configuration has more than one top-level `mode:` line")
    if not found and "mode" in before:
        raise NotPatchable(
            "the configuration sets `mode` in a layout (quoted key, flow style) that does not "
            "allow changing only the `mode:` line"
        )
    if found:
        index = found[0]
        line = lines[index]
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        match = _MODE_LINE.match(body)
        assert match is not None
        old = match.group("value")
        quote = old[0] if old[:1] in ("'", '"') else ""
        sp = match.group("sp") or " "
        lines[index] = f"mode:{sp}{quote}{mode}{quote}{match.group('rest')}{ending}"
        line_no = index + 1
    else:
        ending = "\r\n" if text.endswith("\r\n") else "\n"
        if text and not text.endswith(("\n", "\r")):
            lines[-1] += ending
        lines.append(f"mode: {mode}{ending}")
        line_no = len(lines)
    new_text = "".join(lines)
    try:
        after = yaml.safe_load(new_text)
    except yaml.YAMLError as exc:
        raise NotPatchable(f"changing the `mode:` line would break the YAML: {exc}") from exc
    expected = dict(before)
    expected["mode"] = mode
    if after != expected:
        raise NotPatchable(
            "the configuration's layout (flow style, anchors, several documents) does not allow "
            "changing only the `mode:` line"
        )
    return new_text, line_no


def set_flag(container: dict[str, Any], mode: str) -> dict[str, Any]:
    """A copy of CONTAINER with exactly one ``--proxy-mode`` set to MODE.

    The first existing ``--proxy-mode`` is replaced in place, in its own form
    (``--proxy-mode=x`` or ``--proxy-mode x``); further ones are removed; without one the flag
    is appended once, to ``args`` when the container passes its flags there, else to
    ``command``.
    """
    new = copy.deepcopy(container)
    hits = _flag_hits(new)
    if hits:
        first = hits[0]
        tokens = new[first.field]
        if first.joined:
            tokens[first.index] = f"--proxy-mode={mode}"
        else:
            tokens[first.index + 1] = mode
        for hit in reversed(hits[1:]):
            del new[hit.field][hit.index : hit.index + (1 if hit.joined else 2)]
        return new
    if new.get("args"):
        new["args"] = [*new["args"], f"--proxy-mode={mode}"]
    elif new.get("command"):
        new["command"] = [*new["command"], f"--proxy-mode={mode}"]
    else:
        raise NotPatchable(
            "the container has neither command nor args: the image's entrypoint is unknown"
        )
    return new


def _writer(ctx: FixContext) -> KubeWriter:
    if not isinstance(ctx.kube, KubeWriter):
        raise KubeStepFailed("no live cluster to change (fixes never run on a bundle)")
    return ctx.kube


def _live_pods(ctx: FixContext, namespace: str, selector: str) -> list[dict[str, Any]]:
    """An uncached pod list (the fact cache holds the pods as they were before the fix)."""
    writer = _writer(ctx)
    _status, data = writer.cluster.request(
        "GET",
        PODS.path(namespace),
        query=[("labelSelector", selector)],
        verb="list",
        what=f"pods in namespace {namespace}",
    )
    doc = json.loads(data)
    items = doc.get("items") if isinstance(doc, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def pod_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@dataclass
class RestartOnRollback(Action):
    """Placed before the patches: when the fix is rolled back, restart the kube-proxy pods once
    more, so they run with the restored configuration. Does nothing on apply."""

    namespace: str
    label_selector: str
    patches: list[PatchObject] = field(default_factory=list)

    def describe(self) -> list[str]:
        argv = ["kubectl", "-n", self.namespace, "delete", "pods", "-l", self.label_selector]
        return [f"(only on rollback, after restoring: {shlex.join(argv)})"]

    def apply(self, ctx: FixContext) -> None:
        return None

    def undo(self, ctx: FixContext, backup: Path) -> None:
        if not any(p.applied for p in self.patches):
            return  # nothing was changed: the running pods are fine as they are
        ctx.runner.on_step(self.describe()[0].split(": ", 1)[1].rstrip(")"))
        writer = _writer(ctx)
        for pod in _live_pods(ctx, self.namespace, self.label_selector):
            meta = pod.get("metadata") or {}
            try:
                writer.delete(PODS, self.namespace, meta["name"], meta.get("uid"))
            except ApiError as exc:
                if exc.status != 404:
                    raise KubeStepFailed(str(exc)) from exc


@dataclass
class WaitForPods(Action):
    """Wait until every node that ran an old kube-proxy pod runs a new, ready one.

    Bounded by ``timeout`` and by the run's ``--timeout``. Timing out is not a step failure:
    the re-check that follows sees the pods that are not ready and the engine rolls back.
    """

    namespace: str
    label_selector: str
    #: node → uid of the pod that was there before the fix ("" when any ready pod will do)
    old_pods: dict[str, str]
    timeout: float = WAIT_SECONDS
    what: str = "a new ready kube-proxy pod"

    def describe(self) -> list[str]:
        nodes = ", ".join(sorted(self.old_pods)) or "the nodes"
        return [
            f"wait up to {self.timeout:g}s for {self.what} on {nodes} "
            f"(kubectl -n {self.namespace} get pods -l {self.label_selector} -o wide)"
        ]

    def apply(self, ctx: FixContext) -> None:
        limit = min(self.timeout, max(ctx.options.check_timeout, 1.0))
        deadline = time.monotonic() + limit
        old_uids = {uid for uid in self.old_pods.values() if uid}
        waiting = sorted(self.old_pods)
        ctx.runner.on_step(self.describe()[0])
        while True:
            pods = _live_pods(ctx, self.namespace, self.label_selector)
            ready_nodes = {
                (p.get("spec") or {}).get("nodeName")
                for p in pods
                if pod_ready(p) and (p.get("metadata") or {}).get("uid") not in old_uids
            }
            waiting = [n for n in sorted(self.old_pods) if n not in ready_nodes]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if waiting:
            ctx.runner.on_step(
                f"still waiting for {self.what} after {limit:g}s on {', '.join(waiting)}; the "
                "re-check decides"
            )


def current_pods(cluster: KubeFacts, setup: KubeProxySetup) -> list[dict[str, Any]]:
    try:
        return cluster.list_objects(PODS, namespace=setup.namespace, label_selector=setup.selector)
    except FactMissing:
        return []


def build_fix(
    cluster: KubeFacts,
    setup: KubeProxySetup,
    choice: ModeChoice,
    why: str,
) -> tuple[Fix | None, str | None]:
    """The proxy-mode fix for SETUP, or (None, why it cannot be offered)."""
    actions: list[Action] = []
    patches: list[PatchObject] = []
    target = choice.mode
    change = ""
    if setup.config is not None:
        cfg = setup.config
        if cfg.configmap is None or cfg.object is None or cfg.text is None:
            return None, (
                f"kube-proxy reads {cfg.path}, which is not a ConfigMap key kdoctor can patch"
            )
        if (cfg.mode or DEFAULT_MODE) != target:
            try:
                new_text, line = set_config_mode(cfg.text, target)
            except NotPatchable as exc:
                return None, f"ConfigMap {cfg.configmap} key {cfg.key}: {exc}"
            desired = copy.deepcopy(cfg.object)
            desired.setdefault("data", {})[cfg.key] = new_text
            patches.append(
                PatchObject(
                    resource=CONFIGMAPS,
                    namespace=NAMESPACE,
                    name=cfg.configmap,
                    previous=cfg.object,
                    patch={"data": {cfg.key: new_text}},
                    desired=desired,
                )
            )
            change = f"set `mode: {target}` in ConfigMap {cfg.configmap} key {cfg.key} line {line}"
    else:
        if setup.shell_form:
            return None, (
                "kube-proxy is started through a shell (`sh -c`): change --proxy-mode in that "
                "command by hand"
            )
        if (setup.flag_mode or DEFAULT_MODE) != target or len(setup.flags) > 1:
            ds = setup.daemonset
            containers = copy.deepcopy(ds["spec"]["template"]["spec"]["containers"])
            try:
                containers[setup.container_index] = set_flag(
                    containers[setup.container_index], target
                )
            except NotPatchable as exc:
                return None, f"DaemonSet {setup.name}: {exc}"
            desired = copy.deepcopy(ds)
            desired["spec"]["template"]["spec"]["containers"] = containers
            patches.append(
                PatchObject(
                    resource=DAEMONSETS,
                    namespace=setup.namespace,
                    name=setup.name,
                    previous=ds,
                    patch={"spec": {"template": {"spec": {"containers": containers}}}},
                    desired=desired,
                )
            )
            verb = "replace" if setup.flags else "append"
            change = f"{verb} --proxy-mode={target} in DaemonSet {setup.name}"
    pods = current_pods(cluster, setup)
    old = {
        str((p.get("spec") or {}).get("nodeName")): str(p["metadata"].get("uid"))
        for p in pods
        if (p.get("spec") or {}).get("nodeName")
    }
    owner = f"DaemonSet/{setup.name}"
    if patches:
        actions.append(RestartOnRollback(setup.namespace, setup.selector, patches))
    actions.extend(patches)
    actions.append(RestartPods(setup.namespace, setup.selector, owner=owner))
    actions.append(WaitForPods(setup.namespace, setup.selector, old))
    if patches:
        title = f"kube-proxy mode {setup.mode} → {target}: {change}, restart its pods"
    else:
        title = f"Restart the kube-proxy pods (mode is already {target})"
    title += f" — {why}{choice.title_note()}"
    return Fix(id=FIX_ID, title=title, safety=FixSafety.UNSAFE, actions=actions), None
