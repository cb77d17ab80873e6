"""pyproject.toml and environment.yml must name the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        reqs += [r for r in items if not r.startswith(project["name"])]
    return {_name(r) for r in reqs}


def environment_packages() -> set[str]:
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("\ndependencies:"):].splitlines():
        m = re.match(r"^\s*-\s+(?!-e\b)([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().endswith(":"):
            names.add(_name(m.group(1)))
    return names - {"python", "pip"}


def test_same_package_names():
    py, env = pyproject_packages(), environment_packages()
    assert py == env, f"only in pyproject.toml: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_extras_are_the_ones_promised():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"book", "labs", "test", "all"}
    assert {_name(r) for r in project["dependencies"]} == {"torch", "torchvision", "numpy", "matplotlib", "tqdm"}
    assert any(r.startswith("jupyter-book>=1,<2") for r in extras["book"])
    assert {"pytest", "nbval", "hypothesis"} <= {_name(r) for r in extras["test"]}
    assert {"jupyterlab", "ipykernel"} <= {_name(r) for r in extras["labs"]}
