"""Inventories: native YAML, Ansible YAML and Ansible INI; format detection; located errors; fan-out targets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner.errors import ConfigError, ValidationError
from runner.inventory import Inventory, load_inventory
from runner.inventory_formats import detect_format, expand_range, parse_inventory

NATIVE = """
hosts:
  web1: {address: 10.0.0.11, port: 2222, user: deploy, key: ~/.ssh/deploy, known_hosts: /etc/kh, vars: {role: web}}
  web2: {address: 10.0.0.12}
  db1:
groups:
  web: [web1, web2]
  prod: [web, db1]
"""

ANSIBLE_YAML = """
all:
  vars:
    ansible_user: ops
    tier: base
  hosts:
    bastion: {ansible_host: 10.9.9.9, ansible_port: 2200}
  children:
    prod:
      vars: {tier: prod, env: prod}
      children:
        web:
          vars: {tier: web}
          hosts:
            web[1:2]: {ansible_ssh_private_key_file: /keys/web}
            web3: {ansible_host: 10.0.0.13, ansible_port: "2222", tier: special}
        db:
          hosts:
            db1:
              ansible_host: 10.0.1.1
              ansible_user: postgres
              ansible_ssh_common_args: -o UserKnownHostsFile=/etc/db_known_hosts
"""

ANSIBLE_INI = """
# hosts before any section are 'ungrouped'
bastion:2200 ansible_host=10.9.9.9

[web]
web[01:02] ansible_ssh_private_key_file=/keys/web
web03 ansible_host=10.0.0.13 ansible_port=2222 motd="hello world" tier=special

[db]
db1 ansible_host=10.0.1.1 ansible_user=postgres

[prod:children]
web
db

[prod:vars]
env=prod
tier=prod

[web:vars]
tier=web

[all:vars]
ansible_user=ops
tier=base
"""


def parse(text: str, name: str = "inv") -> Inventory:
    return parse_inventory(textwrap.dedent(text).lstrip(), name)


def names(inv: Inventory, value: object) -> list[str]:
    return [t["name"] for t in inv.resolve(value)]


# ---------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        (NATIVE, "yaml"),
        (ANSIBLE_YAML, "yaml"),
        (ANSIBLE_INI, "ini"),
        ("web1\nweb2 ansible_host=10.0.0.2\n", "ini"),
        ("# only comments\n[web]\nweb1\n", "ini"),
        ("---\nall: {hosts: {a: }}\n", "yaml"),
        ("", "yaml"),
    ],
    ids=["native", "ansible-yaml", "ansible-ini", "ini-without-sections", "ini-after-comment", "yaml-doc-start", "empty"],
)
def test_detect_format(text: str, fmt: str) -> None:
    assert detect_format(textwrap.dedent(text)) == fmt


# ---------------------------------------------------------------------- native


def test_native_hosts_groups_and_nested_groups() -> None:
    inv = parse(NATIVE)
    assert inv.host("web1") == {"name": "web1", "address": "10.0.0.11", "port": 2222, "user": "deploy",
                                "key": "~/.ssh/deploy", "known_hosts": "/etc/kh", "vars": {"role": "web"}}  # fmt: skip
    assert inv.host("db1")["address"] == "db1"
    assert names(inv, "group:prod") == ["web1", "web2", "db1"]
    assert names(inv, ["web", "10.1.1.1"]) == ["web1", "web2", "10.1.1.1"]


def test_native_error_names_file_and_line() -> None:
    text = "hosts:\n  web1: {address: 10.0.0.1}\n  web2: {adress: 10.0.0.2}\n"
    with pytest.raises(ValidationError) as info:
        parse(text, "inv.yaml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("inv.yaml", 3)
    assert "adress" in str(info.value)


# ---------------------------------------------------------------------- Ansible (both syntaxes mean the same)


@pytest.mark.parametrize("text", [ANSIBLE_YAML, ANSIBLE_INI], ids=["yaml", "ini"])
def test_ansible_connection_fields_map_to_entries(text: str) -> None:
    inv = parse(text)
    bastion = inv.host("bastion")
    assert (bastion["address"], bastion["port"], bastion["user"]) == ("10.9.9.9", 2200, "ops")
    db1 = inv.host("db1")
    assert (db1["address"], db1["user"], db1["port"]) == ("10.0.1.1", "postgres", None)
    web3 = inv.host("web03" if "web03" in inv.hosts else "web3")
    assert (web3["address"], web3["port"]) == ("10.0.0.13", 2222)
    assert all(k not in web3["vars"] for k in ("ansible_host", "ansible_port", "ansible_user"))


@pytest.mark.parametrize("text", [ANSIBLE_YAML, ANSIBLE_INI], ids=["yaml", "ini"])
def test_ansible_variable_precedence_and_groups(text: str) -> None:
    inv = parse(text)
    first_web = "web1" if "web1" in inv.hosts else "web01"
    # all < prod < web < host
    assert inv.host(first_web)["vars"]["tier"] == "web"
    assert inv.host(first_web)["vars"]["env"] == "prod"
    assert inv.host(first_web)["key"] == "/keys/web"
    assert inv.host("db1")["vars"]["tier"] == "prod"
    assert inv.host("bastion")["vars"]["tier"] == "base"
    special = inv.host("web03" if "web03" in inv.hosts else "web3")["vars"]
    assert special["tier"] == "special"
    assert len(names(inv, "group:prod")) == 4
    assert names(inv, "db") == ["db1"]
    assert set(names(inv, "all")) == set(inv.hosts)


def test_ansible_yaml_known_hosts_from_ssh_args_and_ranges() -> None:
    inv = parse(ANSIBLE_YAML)
    assert inv.host("db1")["known_hosts"] == "/etc/db_known_hosts"
    assert {"web1", "web2", "web3"} <= set(inv.hosts)


def test_ansible_ini_quoted_values_and_host_port() -> None:
    inv = parse(ANSIBLE_INI)
    assert inv.host("web03")["vars"]["motd"] == "hello world"
    assert inv.groups["ungrouped"] == ["bastion"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("web[01:03]", ["web01", "web02", "web03"]), ("db-[a:c].x", ["db-a.x", "db-b.x", "db-c.x"]),
     ("n[0:6:3]", ["n0", "n3", "n6"]), ("r[1:2]c[1:2]", ["r1c1", "r1c2", "r2c1", "r2c2"]), ("plain", ["plain"])],
    ids=["padded", "alpha", "stride", "two-ranges", "none"],
)  # fmt: skip
def test_host_ranges(pattern: str, expected: list[str]) -> None:
    assert expand_range(pattern) == expected


# ---------------------------------------------------------------------- located errors


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[web]\nweb1\n[web:hosts_and_more]\n", 3, "unknown section type"),
        ("[web]\nweb1 ansible_port\n", 2, "expected key=value"),
        ("[web]\nweb1\n[web:vars]\nnot an assignment\n", 4, "expected key=value"),
        ("[web]\nweb1 motd='unclosed\n", 2, "cannot parse"),
        ("[web]\nweb1 ansible_port=notaport\n", 2, "port"),
        ("[web\nweb1\n", 1, "malformed section"),
        ("[web]\nweb[3:1]\n", 2, "empty"),
    ],
    ids=["section-type", "host-var", "group-var", "quote", "port", "header", "range"],
)
def test_ini_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_inventory(text, "hosts.ini")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("hosts.ini", line), str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"hosts.ini:{line}")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("all:\n  children:\n    web:\n      hosts: [web1, web2]\n", 4, "'hosts' must be a mapping"),
        ("all:\n  children:\n    web:\n      members: {web1: }\n", 4, "unknown key 'members'"),
        ("all:\n  hosts:\n    web1: just-a-string\n", 3, "expected a mapping of variables"),
        ("all:\n  hosts:\n    web1: {ansible_port: 99999}\n", 3, "port"),
        ("web: [1, 2]\n", 1, "expected a mapping"),
    ],
    ids=["hosts-list", "unknown-key", "host-scalar", "port-range", "group-list"],
)
def test_ansible_yaml_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_inventory(text, "inv.yml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("inv.yml", line), str(info.value)
    assert words in str(info.value)


def test_group_cycle_is_an_error() -> None:
    with pytest.raises(ConfigError, match="contains itself"):
        parse_inventory("[a:children]\nb\n[b:children]\na\n", "cycle.ini")


def test_yaml_syntax_error_is_located() -> None:
    with pytest.raises(ValidationError) as info:
        parse_inventory("all:\n  hosts: {a: [\n", "broken.yml")
    assert info.value.problems[0].file == "broken.yml"
    assert info.value.problems[0].line is not None


def test_load_inventory_reads_files_and_reports_missing(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(ANSIBLE_INI, encoding="utf-8")
    assert "web03" in load_inventory(str(path)).hosts
    assert load_inventory(None).resolve("10.0.0.1") == [
        {"name": "10.0.0.1", "address": "10.0.0.1", "port": None, "user": None, "key": None, "known_hosts": None, "vars": {}}
    ]
    with pytest.raises(ConfigError, match="cannot read inventory"):
        load_inventory(str(tmp_path / "missing.ini"))


def test_unknown_group_target_names_the_inventory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no group 'nope'"):
        parse(ANSIBLE_INI, "hosts.ini").resolve("group:nope")


# ---------------------------------------------------------------------- through the real CLI


@pytest.mark.parametrize("fmt", ["ini", "yaml"])
def test_fanout_targets_resolve_through_an_ansible_inventory(project: object, fmt: str) -> None:
    """``--inventory hosts.ini`` + ``targets: group:web``: each target sees its own address and vars."""
    inventory = project.root / f"hosts.{fmt}"  # type: ignore[attr-defined]
    inventory.write_text(textwrap.dedent(ANSIBLE_INI if fmt == "ini" else ANSIBLE_YAML), encoding="utf-8")
    project.write(
        "fan.yaml",
        """
        name: fan
        steps:
          - id: each
            targets: group:web
            batch: {max_concurrency: 2}
            shell: [echo, "{{ target.name }}={{ target.address }}:{{ target.port }}:{{ target.vars.tier }}"]
    """,
    )  # type: ignore[attr-defined]
    result = project.run("--inventory", str(inventory), "run", "fan", "--json")  # type: ignore[attr-defined]
    assert result.code == 0, result
    targets = result.json()["steps"][0]["targets"]
    assert all(t["state"] == "succeeded" for t in targets.values()), targets
    outputs = {name: t["output"]["stdout"].strip() for name, t in targets.items()}
    special = "web03" if fmt == "ini" else "web3"
    assert outputs[special] == f"{special}=10.0.0.13:2222:special"
    assert len(outputs) == 3
