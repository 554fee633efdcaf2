"""``python -m runner.testing._driver STATE_DIR JOB``: drive a run with the test's fakes until the ledger kills it.

Started by :meth:`RunbookHarness.run_until_killed <runner.testing.RunbookHarness.run_until_killed>`: a run in a
separate process, so that a SIGKILL at the chosen step leaves exactly what a crash leaves (a step in flight, a
lease held by a dead process) for the test to resume.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run the job described in ``argv[1]`` (JSON) with the fakes and ledger of state directory ``argv[0]``."""
    from runner.api import Client
    from runner.plugin import PluginHost, get_plugin_manager
    from runner.testing._hooks import Actions, Fakes, Ledger
    from runner.testing._state import State

    state = State(Path(argv[0]))
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    actions = Actions(job["paths"])
    fakes = Fakes(state, actions)
    host = PluginHost(get_plugin_manager(extra=[fakes, Ledger(state, actions, fakes, driver=True)]))
    client = Client(paths=job["paths"], store=job["store"], project_dir=job["project_dir"], actor=job["actor"],
                    inventory=job["inventory"], known_hosts=job["known_hosts"], host=host)  # fmt: skip
    with client:
        if job["action"] == "start":
            view = client.start(job["name"], job["params"], **job["options"])
        else:
            view = client.resume(job["run_id"], **job["options"])
    print(json.dumps(view.model_dump(mode="json")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
