"""Class-name vocabularies (index `i` = class id `i`; synonyms as `"building, edifice"` stay one string, as in the
released code) and prompt templates for MAFT's text classifier."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources

logger = logging.getLogger(__name__)

VOCAB_DIRECTORY = "vocab"  # package data directory inside `maft_hf`

# Shipped vocabularies, `<name>.txt` in `maft_hf/vocab/`; coco_stuff_156_seen = the 171 classes minus the 15 unseen.
_FILE_VOCABULARIES = tuple(
    "coco_stuff_171 coco_stuff_unseen_15 ade20k_150 ade20k_847 pascal_context_59 pascal_context_459 pascal_voc_20 "
    "synthetic".split()
)
_DERIVED_VOCABULARIES = ("coco_stuff_156_seen",)
_UNSEEN_SPLITS = {"coco_stuff": "coco_stuff_unseen_15"}  # the unseen classes of coco_stuff_171


def available_vocabularies() -> list[str]:
    """Names accepted by [`load_vocabulary`], sorted."""
    return sorted(_FILE_VOCABULARIES + _DERIVED_VOCABULARIES)


def _read_package_text(filename: str) -> str:
    return resources.files("maft_hf").joinpath(VOCAB_DIRECTORY).joinpath(filename).read_text(encoding="utf-8")


def _content_lines(text: str) -> list[str]:
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


def parse_vocabulary_lines(text: str) -> list[str]:
    """Class names of a vocabulary file's text: one per line, stripped, blank and `#` lines skipped; of a line with
    tabs (a table row, `coco_stuff_unseen_15.txt`) the last column. Commas are kept."""
    return [line.split("\t")[-1].strip() for line in _content_lines(text)]


def read_vocabulary_file(path: str | os.PathLike) -> list[str]:
    """Read a user vocabulary file (UTF-8, one class per line; rules of [`parse_vocabulary_lines`])."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_vocabulary_lines(f.read())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Cannot read vocabulary file {os.fspath(path)!r}: {err}") from err


def _unseen_rows(dataset: str) -> list[tuple[int, str]]:
    """`(contiguous index, name)` of each unseen class of `dataset` (tests check them against the full vocabulary)."""
    rows = [line.split("\t") for line in _content_lines(_read_package_text(f"{_UNSEEN_SPLITS[dataset]}.txt"))]
    return [(int(columns[0]), columns[-1].strip()) for columns in rows]


def unseen_class_indices(dataset: str = "coco_stuff") -> list[int]:
    """Sorted ids of the unseen classes of `"coco_stuff"` (or `"coco_stuff_171"`): the 15 of paper Tab. 1."""
    key = "coco_stuff" if dataset == "coco_stuff_171" else dataset
    if key not in _UNSEEN_SPLITS:
        raise ValueError(f"No seen/unseen split is shipped for {dataset!r}; expected one of {sorted(_UNSEEN_SPLITS)}.")
    return sorted(index for index, _ in _unseen_rows(key))


def _load_shipped(name: str) -> list[str]:
    if name == "coco_stuff_156_seen":
        unseen = set(unseen_class_indices("coco_stuff"))
        return [n for i, n in enumerate(_load_shipped("coco_stuff_171")) if i not in unseen]
    if name == "coco_stuff_unseen_15":
        return [n for _, n in sorted(_unseen_rows("coco_stuff"))]
    return parse_vocabulary_lines(_read_package_text(f"{name}.txt"))


def validate_vocabulary(names: Sequence[str]) -> list[str]:
    """The stripped names; no empty name nor duplicates (compared lower-cased: CLIP's tokenizer lower-cases)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ValueError(f"A vocabulary must be a list of class-name strings, got {type(names).__name__}.")
    if len(names) == 0:
        raise ValueError("The vocabulary is empty; at least one class name is required.")
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise ValueError(f"Class name at index {index} must be a string, got {type(name).__name__} ({name!r}).")
        if not name.strip():
            raise ValueError(f"Class name at index {index} is empty ({name!r}); every class needs a name.")
        positions.setdefault(name.strip().lower(), []).append(index)
    cleaned = [name.strip() for name in names]
    duplicates = [indices for indices in positions.values() if len(indices) > 1]
    if duplicates:
        described = ", ".join(f"{cleaned[indices[0]]!r} at indices {indices}" for indices in duplicates)
        raise ValueError(f"The vocabulary has duplicate class names (compared case-insensitively): {described}.")
    return cleaned


def load_vocabulary(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """A vocabulary (index `i` = class id `i`) from a list of names, a shipped name ([`available_vocabularies`]) or a
    UTF-8 text file, one class per line. A string is never split (`"cat, kitty"` is one class with a synonym)."""
    if isinstance(spec, (list, tuple)):
        return validate_vocabulary(spec)
    if isinstance(spec, str) and spec in available_vocabularies():
        return validate_vocabulary(_load_shipped(spec))
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(
            "A vocabulary spec must be a list of names, a shipped vocabulary name or a file path, "
            f"got {type(spec).__name__}."
        )
    if not os.path.isfile(spec):
        raise ValueError(
            f"{os.fspath(spec)!r} is neither a shipped vocabulary ({', '.join(available_vocabularies())}) nor an "
            "existing file. Pass a list of class names for a custom vocabulary."
        )
    names = read_vocabulary_file(spec)
    if not names:
        raise ValueError(f"Vocabulary file {os.fspath(spec)!r} has no class names.")
    return validate_vocabulary(names)


def parse_vocabulary_argument(value: str) -> list[str]:
    """A command-line vocabulary: a shipped name, a text file, or else comma-separated class names (names with
    synonyms need a file)."""
    if not isinstance(value, str):
        raise ValueError(f"Expected the vocabulary as a string, got {type(value).__name__}.")
    if value in available_vocabularies() or os.path.isfile(value):
        return load_vocabulary(value)
    if not value.strip(" ,\t\n"):
        raise ValueError(
            f"The vocabulary {value!r} is empty; give a shipped name ({', '.join(available_vocabularies())}), "
            "a text file with one class per line, or comma-separated class names."
        )
    if "," not in value and (value.lower().endswith((".txt", ".csv")) or os.sep in value or "/" in value):
        raise ValueError(f"The vocabulary file {value!r} does not exist.")
    names = load_vocabulary([part.strip() for part in value.split(",")])
    if len(names) == 1:
        close = difflib.get_close_matches(names[0], available_vocabularies(), n=1)
        hint = f" Did you mean the shipped vocabulary {close[0]!r}?" if close else ""
        logger.warning("The vocabulary has a single class %r: every pixel will get it.%s", names[0], hint)
    return names


def unseen_class_ids(
    spec: str | Iterable[int | str], class_names: Sequence[str] | None, num_classes: int | None = None
) -> list[int]:
    """Sorted ids (into `class_names`) of the unseen classes of a zero-shot split, from a shipped vocabulary or file,
    comma-separated names and / or ids (`"cow,giraffe"`, `"3,7"`), or an iterable of names and ids. Names match
    exactly, else case-insensitively; unknown names and ids raise."""
    if isinstance(spec, str) and (spec in available_vocabularies() or os.path.isfile(spec)):
        items: list = load_vocabulary(spec)
    elif isinstance(spec, str):
        items = [int(part) if part.isdigit() else part for part in (p.strip() for p in spec.split(",")) if part]
        if not items:
            raise ValueError(f"The unseen classes {spec!r} name no class.")
    else:
        items = list(spec)
    count = len(class_names) if class_names is not None else num_classes
    exact = {name: i for i, name in enumerate(class_names or [])}
    folded = {name.lower(): i for i, name in enumerate(class_names or [])}
    ids, missing = set(), []
    for item in items:
        if isinstance(item, str):
            if class_names is None:
                raise ValueError(f"unseen class {item!r} is given by name but no class_names were passed.")
            index = exact.get(item.strip(), folded.get(item.strip().lower()))
            if index is None:
                missing.append(item)
            else:
                ids.add(index)
        elif count is not None and not 0 <= int(item) < count:
            raise ValueError(f"unseen class id {int(item)} is outside [0, {count}).")
        else:
            ids.add(int(item))
    if missing:
        raise ValueError(
            f"Unseen classes {missing} are not in the vocabulary of {count} classes (e.g. {list(class_names)[:5]})."
        )
    return sorted(ids)


def load_prompt_templates() -> list[str]:
    """The 14 prompt templates of the released MAFT code, verbatim, one `{}` each (some have no final period)."""
    lines = _read_package_text("prompt_templates.txt").splitlines()
    return validate_templates([line for line in lines if line.strip()])


def validate_templates(templates: Sequence[str]) -> list[str]:
    """Prompt templates as a list, checked: a non-empty list of strings with exactly one `{}` each."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f"Prompt templates must be a non-empty list of strings, got {templates!r}.")
    for index, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"Prompt template at index {index} must be a string with exactly one '{{}}' placeholder, "
                f"got {template!r}."
            )
    return list(templates)
