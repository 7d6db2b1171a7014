"""Faults a real user hits that are not covered beside their feature: each gets a clear error, nothing runs silently
wrong. The full table of faults and where each is tested is docs/reliability.md."""

import pytest

from maft_hf.inference.vocabulary import parse_vocabulary_argument


@pytest.mark.parametrize("value", ["classes.csv", "my_classes.txt", "lists/classes"])
def test_a_missing_vocabulary_file_is_an_error_not_a_one_class_vocabulary(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"vocabulary file '{value}' does not exist"):
        parse_vocabulary_argument(value)
    (tmp_path / "lists").mkdir()
    (tmp_path / value).write_text("sky\nroad\n")
    assert parse_vocabulary_argument(value) == ["sky", "road"]


def test_a_single_word_vocabulary_warns(caplog):
    assert parse_vocabulary_argument("sky") == ["sky"]
    assert "single class 'sky'" in caplog.text
