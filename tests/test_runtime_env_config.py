"""`cluster.runtime_env` and a python engine's module, checked where dpctl runs: before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dpctl_ray.config import ClusterConfig, Config, RuntimeEnv, load_config
from dpctl_ray.engines.spec import PythonSpec
from dpctl_ray.errors import ConfigError
from dpctl_ray.launcher import shipping
from tests.conftest import EXAMPLE_INVENTORY, Invoke


def write(path: Path, doc: object) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_runtime_env_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "extra.py").write_text("X = 1\n")
    config = load_config(
        write(
            tmp_path / "dpctl.yaml",
            {
                "cluster": {
                    "runtime_env": {
                        "env_vars": {"HF_HOME": "/models", "RETRIES": 3},
                        "pip": ["vllm==0.33.0"],
                        "working_dir": "lib",
                        "py_modules": ["extra.py", "s3://bucket/mod.zip"],
                    }
                }
            },
        )
    )
    env = config.cluster.runtime_env
    assert env.env_vars == (("HF_HOME", "/models"), ("RETRIES", "3"))
    assert env.pip == ("vllm==0.33.0",)
    assert env.working_dir == str(tmp_path / "lib")
    assert env.py_modules == (str(tmp_path / "extra.py"), "s3://bucket/mod.zip")


@pytest.mark.parametrize(
    ("runtime_env", "message"),
    [
        ({"envvars": {}}, "cluster.runtime_env.envvars: unknown key"),
        ({"env_vars": ["A=1"]}, "cluster.runtime_env.env_vars: must map variable names to values"),
        ({"env_vars": {"A": {"b": 1}}}, "cluster.runtime_env.env_vars.A: must be a string"),
        ({"env_vars": {"1A": "x"}}, "cluster.runtime_env.env_vars: must be an environment variable name"),
        ({"pip": "vllm"}, "cluster.runtime_env.pip: must be a list of requirements"),
        ({"pip": [""]}, "cluster.runtime_env.pip[0]: must be a non-empty line of text"),
        ({"working_dir": "nowhere"}, "cluster.runtime_env.working_dir: nowhere is not a directory"),
        ({"py_modules": "mod.py"}, "cluster.runtime_env.py_modules: must be a list of paths or URIs"),
        ({"py_modules": ["missing.py"]}, "cluster.runtime_env.py_modules[0]: missing.py is not a directory or a .py"),
        ({"py_modules": ["notes.txt"]}, "cluster.runtime_env.py_modules[0]: notes.txt is a file but not a .py module"),
    ],
)
def test_a_bad_runtime_env_names_its_key(tmp_path: Path, runtime_env: dict, message: str) -> None:
    (tmp_path / "notes.txt").write_text("not python\n")
    with pytest.raises(ConfigError, match=None) as info:
        load_config(write(tmp_path / "dpctl.yaml", {"cluster": {"runtime_env": runtime_env}}))
    assert message in info.value.message


def test_a_bad_runtime_env_is_exit_2_in_one_line(cli: Invoke, tmp_path: Path) -> None:
    config = write(tmp_path / "bad.yaml", {"cluster": {"runtime_env": {"pip": "vllm"}}})
    result = cli("up", "-f", config)
    assert result.exit_code == 2
    assert result.stderr.startswith("dpctl: error: ")
    assert "cluster.runtime_env.pip: must be a list of requirements" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_engine_class_beside_the_config_file_is_found_from_any_directory(cli: Invoke, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "beside_engine.py").write_text(
        "class Beside:\n"
        "    dpctl_bundles = 'per_device'\n"
        "    def start(self, ctx, progress): pass\n"
        "    def health(self): pass\n"
        "    def set_dp(self, dp): pass\n"
        "    def stop(self): pass\n"
    )
    config = write(configs / "engine.yaml", {"engine": {"kind": "python", "class": "beside_engine:Beside"}})
    result = cli("plan", "-f", config, "--inventory", str(EXAMPLE_INVENTORY), "-o", "json")
    assert result.exit_code == 0, result.output
    assert '"bundles": "per_device"' in result.stdout  # the class was loaded: its declared layout is used
    shipped = shipping.for_launch(load_config(config))
    assert shipped["py_modules"] == [str(shipping.PACKAGE), str(configs / "beside_engine.py")]


def test_an_engine_class_that_cannot_be_found_says_where_dpctl_looked(cli: Invoke, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    config = write(configs / "engine.yaml", {"engine": {"kind": "python", "class": "nowhere_engine:Missing"}})
    result = cli("up", "-f", config)
    assert result.exit_code == 2
    line = result.stderr.splitlines()[0]
    assert line == (
        f"dpctl: error: engine.class: no module named 'nowhere_engine' "
        f"(looked in {configs}, {tmp_path}, the installed packages)"
    )


def test_installed_and_dpctl_engines_are_not_shipped_again() -> None:
    demo = Config()
    assert shipping.for_launch(demo)["py_modules"] == [str(shipping.PACKAGE)]
    echo = Config(engine=PythonSpec(cls="dpctl_ray.engines.examples:EchoEngine"))
    assert shipping.for_launch(echo)["py_modules"] == [str(shipping.PACKAGE)]
    installed = Config(engine=PythonSpec(cls="yaml:YAMLObject"))  # site-packages: nodes install their own
    assert shipping.for_launch(installed)["py_modules"] == [str(shipping.PACKAGE)]


def test_the_record_keeps_the_engines_part_and_hosts_get_this_commands_dpctl() -> None:
    given = RuntimeEnv(env_vars=(("A", "1"),), py_modules=("/x/mod.py",))
    job = {
        "py_modules": ["gcs://_ray_pkg_dpctl.zip", "gcs://_ray_pkg_mod.zip"],
        "env_vars": {"A": "1"},
        "working_dir": "gcs://_ray_pkg_uv_hook_cwd.zip",  # added by Ray's uv hook, not by the user
        "py_executable": "uv run python",
    }
    kept = shipping.engine_env(job, given)
    assert kept == {"env_vars": {"A": "1"}, "py_modules": ["gcs://_ray_pkg_mod.zip"]}
    later = {"py_modules": ["gcs://_ray_pkg_dpctl_v2.zip"]}  # a later `scale` ships its own dpctl
    assert shipping.host_env(later, kept) == {
        "env_vars": {"A": "1"},
        "py_modules": ["gcs://_ray_pkg_dpctl_v2.zip", "gcs://_ray_pkg_mod.zip"],
    }
    assert shipping.host_env({}, {}) is None
    assert ClusterConfig().runtime_env.to_document() == {}
