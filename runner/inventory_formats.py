"""Inventory file formats: native YAML, Ansible YAML and Ansible INI (detected from the content).

Native YAML (see :mod:`runner.inventory`)::

    hosts:
      web1: {address: 10.0.0.11, port: 2222, user: deploy, key: ~/.ssh/deploy, vars: {role: web}}
    groups:
      web: [web1]

Ansible YAML::

    all:
      vars: {ansible_user: deploy}
      children:
        web:
          hosts:
            web1: {ansible_host: 10.0.0.11, ansible_port: 2222, role: web}

Ansible INI::

    [web]
    web1 ansible_host=10.0.0.11 ansible_port=2222 role=web
    [web:vars]
    ansible_user=deploy
    [prod:children]
    web

From Ansible, ``ansible_host``, ``ansible_port``, ``ansible_user`` (or ``ansible_ssh_user``) and
``ansible_ssh_private_key_file`` (or ``ansible_private_key_file``) become the host's address,
port, user and key (and ``-o UserKnownHostsFile=PATH`` in ``ansible_ssh_common_args`` the
known_hosts file); every other variable lands in ``vars``, group variables first (parents
before children), host variables last. Host ranges such as ``web[01:03]`` are expanded.
Every error names the file and line.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from runner.errors import Problem, ValidationError
from runner.inventory import HostEntry, Inventory, native
from runner.yamlsafe import Located, load_yaml

__all__ = ["detect_format", "parse_inventory"]

_FIELDS = {
    "ansible_host": "address", "ansible_ssh_host": "address",
    "ansible_port": "port", "ansible_ssh_port": "port",
    "ansible_user": "user", "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "key", "ansible_private_key_file": "key",
}  # fmt: skip
_GROUP_KEYS = {"hosts", "children", "vars"}
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")
_KNOWN_HOSTS_ARG = re.compile(r"UserKnownHostsFile[= ]+['\"]?([^\s'\"]+)")
_SECTION = re.compile(r"^\[([^\]:\s]+)(?::(\w+))?\]\s*$")


def _fail(source: str, line: int | None, message: str, column: int | None = None) -> ValidationError:
    return ValidationError([Problem(message, file=source, line=line, column=column)])


def detect_format(text: str) -> str:
    """``ini`` when the first meaningful line is an INI section or a bare host line, else ``yaml``."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "---")):
            continue
        if _SECTION.match(line):
            return "ini"
        # YAML documents start with a key (`all:`, `hosts:`); an INI host line has no trailing colon.
        first = line.split()[0]
        return "yaml" if first.endswith(":") or line.startswith(("{", "- ")) else "ini"
    return "yaml"


def parse_inventory(text: str, source: str) -> Inventory:
    """Parse an inventory in any supported format (detected from the content)."""
    if detect_format(text) == "ini":
        return _AnsibleBuilder(source).from_ini(text)
    located = load_yaml(text, source)
    data = located.data
    if data is None or data == {}:
        return Inventory(source=source)
    if not isinstance(data, dict):
        raise _fail(source, 1, "expected a mapping: native ('hosts', 'groups') or Ansible ('all: {hosts, children, vars}')")
    if set(data) <= {"hosts", "groups"} and not _looks_ansible_group(data.get("hosts")):
        return native(data, source, located)
    return _AnsibleBuilder(source, located).from_yaml(data)


def _looks_ansible_group(value: Any) -> bool:
    """True for ``hosts: {hosts: ..., vars: ...}``: an Ansible group that happens to be named 'hosts'."""
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= _GROUP_KEYS
        and not any(isinstance(v, dict) and set(v) & {"address", "port", "user", "key", "known_hosts"} for v in value.values())
    )


def expand_range(name: str) -> list[str]:
    """``web[01:03]`` → ``web01, web02, web03``; ``db-[a:c]`` → ``db-a, db-b, db-c`` (Ansible host ranges)."""
    match = _RANGE.search(name)
    if not match:
        return [name]
    start, end, step = match.group(1), match.group(2), int(match.group(3) or 1)
    head, tail = name[: match.start()], name[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, max(step, 1))]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        items = [chr(c) for c in range(ord(start), ord(end) + 1, max(step, 1))]
    else:
        raise ValueError(f"invalid host range [{match.group(0)[1:-1]}] in {name!r}")
    if not items:
        raise ValueError(f"host range in {name!r} is empty")
    return [expanded for item in items for expanded in expand_range(head + item + tail)]


class _AnsibleBuilder:
    """Collects Ansible groups, hosts and variables, then builds an :class:`Inventory`."""

    def __init__(self, source: str, located: Located | None = None) -> None:
        self.source, self.located = source, located
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_line: dict[str, int | None] = {}
        self.groups: dict[str, list[str]] = {"all": []}
        self.group_vars: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ shared

    def _line(self, path: tuple[str | int, ...]) -> int | None:
        return self.located.position(path)[0] if self.located is not None else None

    def _group(self, name: str) -> list[str]:
        return self.groups.setdefault(name, [])

    def _add_host(self, group: str, pattern: str, variables: dict[str, Any], line: int | None) -> None:
        try:
            names = expand_range(pattern)
        except ValueError as exc:
            raise _fail(self.source, line, str(exc)) from None
        for name in names:
            self.host_vars.setdefault(name, {}).update(variables)
            self.host_line.setdefault(name, line)
            members = self._group(group)
            if name not in members:
                members.append(name)

    def _depth(self, group: str, seen: frozenset[str] = frozenset()) -> int:
        """How deep ``group`` nests below ``all``: deeper groups' variables win (Ansible's rule)."""
        if group == "all" or group in seen:
            return 0
        parents = [g for g, members in self.groups.items() if group in members and g not in (group, "all")]
        return 1 + max((self._depth(p, seen | {group}) for p in parents), default=0)

    def build(self) -> Inventory:
        """Hosts with merged variables; every group, plus ``all`` holding every host."""
        self.groups["all"] = list(self.host_vars)
        inv = Inventory(groups={g: list(m) for g, m in self.groups.items()}, source=self.source)
        for group in inv.groups:
            inv.members(group)  # raises on a group that contains itself, naming it
        order = sorted(self.group_vars, key=lambda g: (self._depth(g), g))
        for name, own in self.host_vars.items():
            merged: dict[str, Any] = {}
            for group in order:
                if group == "all" or name in self._hosts_of(group):
                    merged.update(self.group_vars[group])
            merged.update(own)
            inv.hosts[name] = self._entry(name, merged)
        return inv

    def _hosts_of(self, group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for item in self.groups.get(group, []):
            if item in self.groups and item not in seen:
                out |= self._hosts_of(item, seen | {group})
            elif item not in self.groups:
                out.add(item)
        return out

    def _entry(self, name: str, merged: dict[str, Any]) -> HostEntry:
        fields: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in merged.items():
            if key in _FIELDS:
                fields.setdefault(_FIELDS[key], value)
            else:
                rest[key] = value
        args = " ".join(str(merged.get(k, "")) for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
        known = _KNOWN_HOSTS_ARG.search(args)
        if known:
            fields["known_hosts"] = known.group(1)
        if isinstance(fields.get("port"), str) and fields["port"].strip().isdigit():
            fields["port"] = int(fields["port"])
        try:
            return HostEntry(**{k: str(v) if k != "port" else v for k, v in fields.items()}, vars=rest)
        except PydanticValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
            raise _fail(self.source, self.host_line.get(name), f"host '{name}': {msg}") from None

    # ------------------------------------------------------------------ Ansible YAML

    def from_yaml(self, data: dict[str, Any]) -> Inventory:
        """``{group: {hosts: {name: vars}, children: {group: ...}, vars: {...}}}``."""
        for name, body in data.items():
            self._yaml_group(str(name), body, (str(name),))
        return self.build()

    def _yaml_group(self, name: str, body: Any, path: tuple[str | int, ...]) -> None:
        self._group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise _fail(self.source, self._line(path), f"group '{name}': expected a mapping with hosts, children or vars")
        unknown = sorted(set(body) - _GROUP_KEYS)
        if unknown:
            raise _fail(
                self.source,
                self._line((*path, unknown[0])),
                f"group '{name}': unknown key '{unknown[0]}' (expected hosts, children or vars)",
            )
        hosts, children, variables = body.get("hosts") or {}, body.get("children") or {}, body.get("vars") or {}
        for key, value in (("hosts", hosts), ("children", children), ("vars", variables)):
            if not isinstance(value, dict):
                raise _fail(self.source, self._line((*path, key)), f"group '{name}': '{key}' must be a mapping, got {type(value).__name__}")
        self.group_vars.setdefault(name, {}).update(variables)
        for host, host_vars in hosts.items():
            if host_vars is not None and not isinstance(host_vars, dict):
                raise _fail(self.source, self._line((*path, "hosts", str(host))), f"host '{host}': expected a mapping of variables")
            self._add_host(name, str(host), host_vars or {}, self._line((*path, "hosts", str(host))))
        for child, child_body in children.items():
            members = self._group(name)
            if str(child) not in members:
                members.append(str(child))
            self._yaml_group(str(child), child_body, (*path, "children", str(child)))

    # ------------------------------------------------------------------ Ansible INI

    def from_ini(self, text: str) -> Inventory:
        """``[group]`` host lines, ``[group:vars]`` key=value lines, ``[group:children]`` group names."""
        section, kind = "ungrouped", "hosts"
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            header = _SECTION.match(line)
            if header:
                section, kind = header.group(1), header.group(2) or "hosts"
                if kind not in ("hosts", "vars", "children"):
                    raise _fail(self.source, number, f"unknown section type ':{kind}' (expected :vars or :children)")
                self._group(section)
                continue
            if line.startswith("["):
                raise _fail(self.source, number, f"malformed section header {line!r}")
            self._ini_line(section, kind, line, number)
        return self.build()

    def _ini_line(self, section: str, kind: str, line: str, number: int) -> None:
        if kind == "children":
            members = self._group(section)
            child = line.split()[0]
            self._group(child)
            if child not in members:
                members.append(child)
            return
        if kind == "vars":
            key, value = self._assignment(line, number)
            self.group_vars.setdefault(section, {})[key] = value
            return
        words = self._split(line, number)
        host, variables = words[0], {}
        for word in words[1:]:
            key, value = self._assignment(word, number)
            variables[key] = value
        port = re.fullmatch(r"([^:\[\]]+):(\d+)", host)
        if port:
            host, variables = port.group(1), {"ansible_port": int(port.group(2)), **variables}
        self._add_host(section, host, variables, number)

    def _split(self, line: str, number: int) -> list[str]:
        try:
            return shlex.split(line, comments=True)
        except ValueError as exc:
            raise _fail(self.source, number, f"cannot parse line: {exc}") from None

    def _assignment(self, text: str, number: int) -> tuple[str, Any]:
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise _fail(self.source, number, f"expected key=value, got {text!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            return key, value[1:-1]
        return key, int(value) if re.fullmatch(r"-?\d+", value) else value
