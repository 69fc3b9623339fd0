"""Command lines are scanned and masked before they are recorded anywhere."""

from __future__ import annotations

from egressguard.scan.engine import ScanEngine
from egressguard.scan.pack import load_pack
from egressguard.scan.redact import MAX_ARG_BYTES, redact_args

AWS = "AKIA" + "Z7Q2MXV5" + "LKJ3HN4P"
EMAIL = "jane.doe" + "@" + "corp-example.org"


def test_secrets_in_arguments_are_masked_same_length() -> None:
    engine = ScanEngine(load_pack(None), b"k" * 32)
    args = ("curl", "--data-binary", f"key={AWS}&to={EMAIL}", "http://127.0.0.1/")
    out = redact_args(engine, args)
    assert out[0] == "curl" and out[1] == "--data-binary" and out[3] == args[3]
    assert AWS not in out[2] and EMAIL not in out[2]
    assert len(out[2]) == len(args[2])
    assert out[2].startswith("key=AKIA")          # the public prefix stays readable


def test_huge_argument_is_cut_and_still_masked() -> None:
    engine = ScanEngine(load_pack(None), b"k" * 32)
    arg = "x " * 10 + AWS + " " + "y" * (MAX_ARG_BYTES * 2)
    (out,) = redact_args(engine, (arg,))
    assert AWS not in out and out.endswith("...[cut]")
