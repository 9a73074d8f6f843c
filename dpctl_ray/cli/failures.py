"""A change that failed, in words: its cause's own message, and what it left (the launcher says both as data)."""

from __future__ import annotations

from dpctl_ray.errors import ChangeFailed, DpctlError, Left


def in_words(failed: ChangeFailed) -> DpctlError:
    """The error to print for a failed change: what happened to the deployment first, then why (its cause)."""
    cause, name = failed.cause, failed.name
    why = cause.message
    ranks = ", ".join(map(str, failed.ranks))
    if failed.operation == "repair":
        state = "its group is down" if failed.left is Left.DOWN else "the other ranks keep running"
        message = f"{name}: the repair of ranks {ranks} failed ({state}): {why}"
    elif failed.operation == "restart":
        message = f"{why}; {name} is still down (`dpctl down {name}` removes it)"
    elif failed.left is Left.RESTARTED:
        message = (
            f"{name} restarted at its old size of {failed.before} ranks: "
            f"the group could not start at {failed.after} ranks: {why}"
        )
    elif failed.left is Left.DOWN:
        message = (
            f"{name} could not restart at its {failed.before} ranks either and is down ({failed.second}), its "
            f"placement groups kept (`dpctl scale {name} --dp {failed.before}` tries again, `dpctl down` removes it): "
            f"the group could not start at {failed.after} ranks: {why}"
        )
    else:
        message = f"{why}; {name} keeps running with its {failed.before} ranks"
    words = type(cause)(message, hint=cause.hint, code=cause.code, details=cause.details)
    words.failed_ranks = cause.failed_ranks
    return words
