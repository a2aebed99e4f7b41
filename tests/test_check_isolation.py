"""The checker is independent of the code that finds evidence: importing it in a fresh
interpreter loads no producer module and no CP-SAT."""

from __future__ import annotations

import json
import subprocess
import sys

PRODUCER_MODULES = {
    "verify_compress.search",
    "verify_compress.witnesses",
    "verify_compress.stability",
    "verify_compress.branching",
    "verify_compress.propagation",
    "verify_compress.lp",
    "verify_compress.bounds",
    "verify_compress.pipeline",
    "verify_compress.training",
}


def _modules_after_importing(module: str) -> set[str]:
    script = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(output))


def test_importing_the_checker_loads_no_producer_module_and_no_ortools() -> None:
    loaded = _modules_after_importing("verify_compress.check")
    assert not loaded & PRODUCER_MODULES, sorted(loaded & PRODUCER_MODULES)
    assert not any(name == "ortools" or name.startswith("ortools.") for name in loaded)


def test_the_kernel_imports_only_the_core_and_its_exact_arithmetic() -> None:
    loaded = {
        m
        for m in _modules_after_importing("verify_compress.kernel.stability")
        if m.startswith("verify_compress")
    }
    assert loaded <= {
        "verify_compress",
        "verify_compress.kernel",
        "verify_compress.kernel.bounds",
        "verify_compress.kernel.scaled",
        "verify_compress.kernel.stability",
        "verify_compress.domain",
        "verify_compress.errors",
        "verify_compress.exact",
        "verify_compress.ir",
        "verify_compress.status",
        "verify_compress.subdomains",
    }, sorted(loaded)


def test_the_kernel_needs_no_solver() -> None:
    loaded = _modules_after_importing("verify_compress.kernel.stability")
    assert "z3" not in loaded and "cvc5" not in loaded
    assert not any(name.startswith("ortools") for name in loaded)


def test_the_format_imports_only_the_standard_library_and_the_core_enums() -> None:
    """The certificate's one owner (records, parsing, schema) needs no numpy, no jsonschema,
    no producer module and no solver."""
    loaded = _modules_after_importing("verify_compress.kernel.format")
    assert {m for m in loaded if m.startswith("verify_compress")} <= {
        "verify_compress",
        "verify_compress.errors",
        "verify_compress.kernel",
        "verify_compress.kernel.format",
        "verify_compress.status",
    }, sorted(loaded)
    heavy = {"numpy", "jsonschema", "z3", "cvc5", "onnx", "flint"}
    assert not {m.split(".")[0] for m in loaded} & heavy
    assert not any(name.startswith("ortools") for name in loaded)
