"""The dependencies point one way: collection/ and baselines/ stand on the library, never the
reverse, and no import circle ties the packages together."""
import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("marl_offline_bench", "collection", "baselines")


def _imports(package: str) -> dict[str, set[str]]:
    """module -> the top-level packages of this repository it imports (at any depth)."""
    found = collections.defaultdict(set)
    for path in (ROOT / package).rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found[module] |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


def test_the_library_imports_nothing_above_it():
    upward = {module: sorted(targets - {"marl_offline_bench"})
              for module, targets in _imports("marl_offline_bench").items()
              if targets - {"marl_offline_bench"}}
    assert not upward, f"the library imports collection/baselines: {upward}"


def test_no_circle_between_the_packages():
    edges = {package: set().union(*_imports(package).values()) - {package}
             for package in PACKAGES}

    def reaches(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    circles = [p for p in PACKAGES if p in reaches(p)]
    assert not circles, f"packages on an import circle: {circles} ({edges})"


def test_one_sampler_implementation():
    samplers = [f"{path.relative_to(ROOT)}:{node.name}"
                for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ClassDef) and node.name.endswith("Sampler")]
    assert samplers == ["marl_offline_bench/dataset.py:BatchSampler"], samplers
