"""Every module sits in a layer of the import-linter contracts (pyproject.toml), so a new module cannot
escape them; `make test` runs `lint-imports` on the contracts themselves."""

from __future__ import annotations

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    names: set[str] = set()
    for contract in config["contracts"]:
        for layer in contract.get("layers", ()):
            names.update(n.strip() for n in re.split(r"[|:]", layer))
    return names


def _modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_module_is_in_a_layer():
    layered = _layered()
    loose = [
        m
        for m in _modules("tpu_grapheme") + _modules("tune")
        if not any(m == n or m.startswith(n + ".") for n in layered)
        and m not in ("tpu_grapheme", "tpu_grapheme.data")
    ]
    assert not loose, f"modules in no layer of pyproject.toml's import-linter contracts: {loose}"
