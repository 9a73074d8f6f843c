"""What a command sends to the nodes with its Ray job: dpctl's own package, a user's engine module, runtime_env.

Nodes need Ray (and the engine's own software, such as vLLM), nothing of dpctl: a command that runs code on
them (`up`, `scale`, `logs`) joins with a job-level runtime_env whose `py_modules` holds the `dpctl_ray`
package. Ray uploads it to the cluster once per content hash and each node unpacks it once, so a command
whose code has not changed pays for hashing a few hundred kilobytes, not for an upload. `status`, `plan` and
`down` run nothing on the nodes and ship nothing.

Local paths can only be uploaded at the job level (`ray.init`); an actor's runtime_env takes URIs. So `up`
ships everything at the job level, keeps what Ray made of the engine's part (URIs, env_vars, pip) in the
deployment's record, and gives each engine host that part with this job's dpctl package: a later `scale` from
another process starts new hosts with the same engine environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpctl_ray.config import Config, RuntimeEnv
from dpctl_ray.engines.loader import module_source
from dpctl_ray.engines.spec import PythonSpec

PACKAGE = Path(__file__).resolve().parent.parent  # the dpctl_ray directory, wherever it is installed
EXCLUDES = ["__pycache__", "*.pyc", "*.pyo"]  # bytecode differs per machine and would change the hash


def code_only() -> dict[str, Any]:
    """The job runtime_env of a command that runs only dpctl's code on the nodes (`scale`, `logs`)."""
    return {"py_modules": [str(PACKAGE)], "excludes": EXCLUDES}


def for_launch(config: Config) -> dict[str, Any]:
    """The job runtime_env of `up`: dpctl's package first, the engine's module, then `cluster.runtime_env`."""
    given = config.cluster.runtime_env
    modules = [str(PACKAGE)]
    if isinstance(config.engine, PythonSpec) and (source := module_source(config.engine.cls)) is not None:
        modules.append(str(source))
    modules += [m for m in given.py_modules if m not in modules]
    env: dict[str, Any] = {"py_modules": modules, "excludes": EXCLUDES}
    if given.working_dir:
        env["working_dir"] = given.working_dir
    if given.env_vars:
        env["env_vars"] = dict(given.env_vars)
    if given.pip:
        env["pip"] = list(given.pip)
    return env


def current_job() -> dict[str, Any]:
    """The runtime_env of the joined job as Ray resolved it (uploaded paths replaced by their URIs)."""
    import ray  # noqa: PLC0415 - the Ray side: only after connect() has set Ray's environment

    return dict(ray.get_runtime_context().runtime_env or {})


def engine_env(job: Mapping[str, Any], given: RuntimeEnv) -> dict[str, Any]:
    """What a deployment's record keeps: the job's runtime_env without dpctl's package and what Ray added.

    Only keys the user gave are kept (Ray's uv hook adds a working_dir of its own to the job).
    """
    doc = given.to_document()
    out: dict[str, Any] = {k: job[k] for k in ("env_vars", "pip", "working_dir") if k in doc and job.get(k)}
    modules = list(job.get("py_modules") or [])[1:]  # [0] is dpctl's package (for_launch puts it first)
    if modules:
        out["py_modules"] = modules
    return out


def host_env(job: Mapping[str, Any], engine: Mapping[str, Any]) -> dict[str, Any] | None:
    """An engine host's runtime_env: this job's dpctl package and the deployment's engine environment.

    None when the job ships nothing (the host then inherits the job's environment, whatever it is).
    """
    shipped = list(job.get("py_modules") or [])[:1]
    if not shipped and not engine:
        return None
    env = dict(engine)
    modules = shipped + list(engine.get("py_modules", []))
    if modules:
        env["py_modules"] = modules
    return env
