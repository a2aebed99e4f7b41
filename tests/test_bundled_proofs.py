"""The certificates shipped in proofs/ stay valid: re-checked from scratch on every test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from verify_compress.check import check_certificate

PROOFS = sorted((Path(__file__).resolve().parents[1] / "proofs").glob("*/certificate.json"))


def test_every_bundled_model_has_a_certificate() -> None:
    models = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.onnx"))
    assert {p.parent.name for p in PROOFS} == {m.stem for m in models}


@pytest.mark.parametrize("certificate", PROOFS, ids=lambda p: p.parent.name)
def test_a_bundled_certificate_passes_the_checker(certificate: Path) -> None:
    report = check_certificate(certificate)
    assert report.valid, report.first_failure
    assert report.counts["equivalence_obligations"] > 0
