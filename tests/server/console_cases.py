"""Runbooks, tokens and a server config shared by the console tests."""

from __future__ import annotations

RUNBOOKS = {
    "gated.yaml": """
        name: gated
        description: Drain a node after a person approves
        steps:
          - id: ask
            approval: {message: "drain <b>web1</b>?", approvers: 1, distinct_from_starter: true, expires: 1h}
          - id: act
            shell: [sh, -c, 'echo drained']
    """,
    "only-alice.yaml": """
        name: only-alice
        steps:
          - id: ask
            approval: {message: "alice decides", allowed: [alice], expires: 1h}
          - id: act
            shell: ["true"]
    """,
    "probe.yaml": """
        name: probe
        steps:
          - id: first
            shell: [sh, -c, 'echo first ran']
          - id: restart
            check:
              - shell: [test, -f, /nonexistent/flag-file]
            shell: [sh, -c, 'echo trying restart; echo "backend refused the connection" >&2; exit 4']
    """,
    "typed.yaml": """
        name: typed
        description: "Types <script>alert(1)</script> of params"
        params:
          count: {type: integer, default: 2, minimum: 1, maximum: 10, description: "how many <i>times</i>"}
          mode: {type: string, enum: [fast, slow]}
          token: {type: string, secret: true, description: "API credential", allow: ["env:DEPLOY_*", "env:T"]}
          tags: {type: array, items: string, required: false}
          dry: {type: boolean, default: false}
          note: {type: string, default: "", pattern: '^[^;]*$'}
        steps:
          - id: show
            shell: [sh, -c, 'echo "count=$1 mode=$2"', sh, "{{ params.count }}", "{{ params.mode }}"]
    """,
    "fanout.yaml": """
        name: fanout
        steps:
          - id: each
            targets: [alpha, beta]
            check:
              - shell: [test, -f, "/nonexistent/{{ target.name }}"]
            shell: [sh, -c, 'echo "hello from $1"; if [ "$1" = beta ]; then echo "beta broke" >&2; exit 5; fi', sh, "{{ target.name }}"]
    """,
    "ticking.yaml": """
        name: ticking
        steps:
          - id: tick
            shell: [sh, -c, 'for i in 1 2 3 4 5 6; do echo "tick-$i"; sleep 0.5; done']
    """,
    "longout.yaml": """
        name: longout
        steps:
          - id: chatty
            shell: [sh, -c, 'i=1; while [ $i -le 100 ]; do echo "line-$i"; i=$((i+1)); done']
    """,
}

TOKENS = {"oncall": "tok-oncall-7f3a", "alice": "tok-alice-91bc", "viewer": "tok-viewer-22de", "runner": "tok-runner-5e1f",
          "root": "tok-root-c0ff", "bot": "tok-agent-b077"}  # fmt: skip
ENV = {f"C_{name.upper()}": value for name, value in TOKENS.items()}

CONFIG = """
tokens:
  - {name: oncall, token: env:C_ONCALL, scopes: [read, run, approve]}
  - {name: alice, token: env:C_ALICE, scopes: [read, approve]}
  - {name: viewer, token: env:C_VIEWER, scopes: [read]}
  - {name: runner, token: env:C_RUNNER, scopes: [read, run]}
  - {name: root, token: env:C_ROOT, scopes: [admin]}
  - {name: bot, token: env:C_BOT, scopes: [agent]}
routes:
  - name: web-down
    match: {alertname: WebDown}
    runbook: gated
    breaker: {failures: 3, within: 1h}
"""

POLICY = """
allow: [gated, typed]
runbooks:
  typed: {agents_may_approve: true}
"""
