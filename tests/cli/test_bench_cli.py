"""The ``bench`` commands as registered on a parser (the main CLI does the same)."""

from __future__ import annotations

import argparse

import pytest

from img_agent.cli import bench as cli


def test_register_under_a_parent_parser_with_global_model_option():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub, common)
    args = parser.parse_args(["bench", "ingest", "--model", "tiny-test", "--quick", "--images", "2k"])
    assert args.model == "tiny-test" and args.images == 2000 and callable(args.func)
    args = parser.parse_args(["bench", "ann", "--n", "100k,1M", "--kind", "clip,smooth", "--families", "IVF,HNSW"])
    assert args.n == [100_000, 1_000_000] and args.kind == ["clip", "smooth"] and args.families == ["IVF", "HNSW"]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "ann", "--families", "Annoy"])
