"""The packages' declared APIs, and what importing them costs.

`exactmaild-sendmail` starts on every PHP mail() call, and every part of the
daemon imports the configuration types: neither may pull in the YAML loader
(or the daemon) just by being imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType

import pytest

import exactmaild.cli
import exactmaild.config
from tests.helpers import REPO


def imported_by(statement: str) -> set[str]:
    """The exactmaild and yaml modules a fresh interpreter has loaded after `statement`."""
    code = (
        f"import sys, json\n{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('exactmaild', 'yaml'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, cwd=REPO
    ).stdout
    return set(json.loads(out))


def test_config_types_come_without_the_yaml_loader() -> None:
    for statement in ("import exactmaild.config.model", "from exactmaild.config import Config"):
        loaded = imported_by(statement)
        assert "exactmaild.config.model" in loaded
        assert not {"yaml", "exactmaild.config.load", "exactmaild.config.yamlnodes"} & loaded


def test_command_line_start_up_loads_no_configuration_daemon_or_spool() -> None:
    loaded = imported_by("from exactmaild.cli import main, sendmail_main")
    assert "exactmaild.cli.sendmail" in loaded
    heavy = {m for m in loaded if m == "yaml" or m.startswith("exactmaild.config")}
    heavy |= {
        m for m in loaded if m.split(".")[1:2] in (["daemon"], ["outbox"], ["send"], ["store"])
    }
    assert heavy == set()


@pytest.mark.parametrize("package", [exactmaild.config, exactmaild.cli])
def test_every_name_in_all_is_importable(package: ModuleType) -> None:
    names = package.__all__
    assert names
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(names) <= set(namespace)


def test_config_load_is_the_loader_module() -> None:
    from exactmaild.config import load

    assert load.__name__ == "exactmaild.config.load"
    assert callable(load.load) and callable(load.parse) and callable(load.parse_duration)


def test_console_scripts_resolve() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "exactmaild": "exactmaild.cli:main",
        "exactmaild-sendmail": "exactmaild.cli:sendmail_main",
    }
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(sys.modules[module], name))
