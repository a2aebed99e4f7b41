"""One error hierarchy for every stage.

Every error the user can cause derives from `VerifyCompressError`; its message is one line that
names the offending item (file, node, op, input index). The CLI maps these to exit code 2.
"""

from __future__ import annotations


class VerifyCompressError(Exception):
    """Root of all errors raised for bad input or failed checks."""


class ModelError(VerifyCompressError):
    """The ONNX file cannot be read or is not a network this tool supports."""


class UnsupportedModelError(ModelError):
    """The ONNX graph uses ops or forms outside the supported set."""


class NetworkError(VerifyCompressError):
    """A network IR is malformed (shapes do not chain, non-finite values)."""


class DomainError(VerifyCompressError):
    """An input domain is malformed (lower > upper, NaN, wrong length, bad file)."""


class VnnlibError(DomainError):
    """A VNN-LIB file cannot be parsed; the message names the file and line."""


class CertificateError(VerifyCompressError):
    """A certificate is malformed or fails verification; the message names the item."""


class MissingToolError(VerifyCompressError):
    """An optional tool the command needs (say the cvc5 solver) is not installed; the message
    says how to install it."""


class OutputError(VerifyCompressError):
    """The output directory cannot be used: it is a file, a folder of someone's own files, or
    not writable; the message names the path."""
