"""A decorator argument of the wrong type, and a probe decorator with one: each named at its decorator."""

from runner import Context, Params, Runbook

rb = Runbook("py-bad-decorator", params=Params)


@rb.step(timeout="soon")
def restart(ctx: Context, p: Params) -> None:
    return None


@restart.verify(within="forever")
def healthy(ctx: Context, p: Params) -> bool:
    return True
