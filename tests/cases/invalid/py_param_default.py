"""A params class whose default is not of the field's type (pydantic does not check defaults)."""

from runner import Context, Params, Runbook


class PingParams(Params):
    host: str
    port: int = "eighty"  # type: ignore[assignment]


rb = Runbook("py-param-default", params=PingParams)


@rb.step()
def ping(ctx: Context, p: PingParams) -> dict[str, str]:
    return {"host": p.host}
