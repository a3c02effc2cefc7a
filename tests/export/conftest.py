"""Fixtures of the export tests."""

import pathlib

import pytest

from tests.export import parity


@pytest.fixture(scope="session")
def text_source(tmp_path_factory) -> pathlib.Path:
    """A tiny random HF BERT folder with a word-level tokenizer."""
    return parity.write_text_source(tmp_path_factory.mktemp("tiny_bert"))
