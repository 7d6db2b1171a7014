"""Vocabularies, prompt templates and the COCO-Stuff seen/unseen split."""

import pytest

from maft_hf.inference.vocabulary import (
    available_vocabularies,
    load_prompt_templates,
    load_vocabulary,
    parse_vocabulary_lines,
    unseen_class_indices,
    validate_vocabulary,
)

EXPECTED_SIZES = {
    "coco_stuff_171": 171,
    "coco_stuff_156_seen": 156,
    "coco_stuff_unseen_15": 15,
    "ade20k_150": 150,
    "ade20k_847": 847,
    "pascal_context_59": 59,
    "pascal_context_459": 459,
    "pascal_voc_20": 20,
    "synthetic": 8,
}
UNSEEN_NAMES = {
    "frisbee", "skateboard", "cardboard", "carrot", "scissors", "suitcase", "giraffe", "cow", "road",
    "wall-concrete", "tree", "grass", "river", "clouds", "playingfield",
}  # fmt: skip


def test_available_vocabularies_lists_every_shipped_name():
    assert set(available_vocabularies()) == set(EXPECTED_SIZES)


@pytest.mark.parametrize("name,size", sorted(EXPECTED_SIZES.items()))
def test_shipped_vocabulary_sizes(name, size):
    names = load_vocabulary(name)
    assert len(names) == size
    assert all(n == n.strip() and n for n in names)


def test_known_entries_and_synonyms_kept_verbatim():
    ade847 = load_vocabulary("ade20k_847")
    assert ade847[1] == "building, edifice"
    assert load_vocabulary("ade20k_150")[8] == "window"  # detectron2's "window " stripped
    assert load_vocabulary("synthetic") == ["sky", "grass", "water", "road", "wall", "tree", "person", "car"]
    assert load_vocabulary("pascal_voc_20")[0] == "aeroplane"


def test_unseen_split_is_consistent():
    full = load_vocabulary("coco_stuff_171")
    unseen = unseen_class_indices("coco_stuff")
    assert unseen == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
    assert {full[i] for i in unseen} == UNSEEN_NAMES
    assert set(load_vocabulary("coco_stuff_unseen_15")) == UNSEEN_NAMES
    assert load_vocabulary("coco_stuff_unseen_15") == [full[i] for i in unseen]
    seen = load_vocabulary("coco_stuff_156_seen")
    assert seen == [n for i, n in enumerate(full) if i not in set(unseen)]
    assert unseen_class_indices("coco_stuff_171") == unseen


def test_unseen_split_unknown_dataset():
    with pytest.raises(ValueError, match="ade20k_150"):
        unseen_class_indices("ade20k_150")


def test_prompt_templates_verbatim():
    templates = load_prompt_templates()
    assert len(templates) == 14
    assert templates[0] == "a photo of a {}."
    assert templates[1] == "This is a photo of a {}"  # no final period, as released
    assert templates[-1] == "There is a large {} in the scene."
    assert all(t.count("{}") == 1 for t in templates)


def test_list_passes_through_stripped_and_copied():
    names = [" cat", "dog, puppy "]
    loaded = load_vocabulary(names)
    assert loaded == ["cat", "dog, puppy"]
    assert loaded is not names
    assert load_vocabulary(("a", "b")) == ["a", "b"]


def test_file_vocabulary(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\ncat\n\n  building, edifice  \nred car\n", encoding="utf-8")
    assert load_vocabulary(path) == ["cat", "building, edifice", "red car"]
    assert load_vocabulary(str(path)) == ["cat", "building, edifice", "red car"]


def test_table_lines_use_the_last_column():
    assert parse_vocabulary_lines("# header\n3\t4\t3\tcow\n") == ["cow"]


def test_unknown_string_is_not_split(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped vocabulary"):
        load_vocabulary("cat, dog")
    with pytest.raises(ValueError, match="neither a shipped vocabulary"):
        load_vocabulary(str(tmp_path / "missing.txt"))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no class names"):
        load_vocabulary(path)


def test_bad_spec_type():
    with pytest.raises(ValueError, match="int"):
        load_vocabulary(3)


def test_validate_empty_vocabulary():
    with pytest.raises(ValueError, match="empty"):
        validate_vocabulary([])


def test_validate_empty_name_says_which():
    with pytest.raises(ValueError, match="index 1"):
        validate_vocabulary(["cat", "  ", "dog"])


def test_validate_duplicates_say_which():
    with pytest.raises(ValueError, match=r"'cat' at indices \[0, 2\]"):
        validate_vocabulary(["cat", "dog", "Cat "])


def test_validate_rejects_non_strings_and_a_bare_string():
    with pytest.raises(ValueError, match="index 1"):
        validate_vocabulary(["cat", 3])
    with pytest.raises(ValueError, match="list of class-name strings"):
        validate_vocabulary("cat")


def test_duplicates_in_lists_rejected_by_load():
    with pytest.raises(ValueError, match="duplicate"):
        load_vocabulary(["cat", "cat"])
