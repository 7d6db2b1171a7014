"""Class-name vocabularies and prompt templates for MAFT's text classifier.

A vocabulary is a list of class names; index `i` is contiguous class id `i` of the dataset's label maps. Names may
carry comma-separated synonyms (`"building, edifice"`): they stay one string and go into the prompt templates
verbatim, as the released MAFT code does.

[`load_vocabulary`] accepts exactly three kinds of `spec`, tried in this order:

1. a list or tuple of strings: the class names themselves (stripped, validated, copied);
2. a string that is a shipped vocabulary name (see [`available_vocabularies`]);
3. a string or path of an existing text file: one class per line (see [`read_vocabulary_file`]).

Anything else raises `ValueError`. A string is never split into several names (a comma is part of a class name's
synonyms), so command-line tools that take `"cat,dog"` must split it themselves before calling this function.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources

logger = logging.getLogger(__name__)

VOCAB_DIRECTORY = "vocab"  # package data directory inside `maft_hf`

# Shipped vocabularies that are one file each, `<name>.txt` in `maft_hf/vocab/`.
_FILE_VOCABULARIES = (
    "coco_stuff_171",
    "coco_stuff_unseen_15",
    "ade20k_150",
    "ade20k_847",
    "pascal_context_59",
    "pascal_context_459",
    "pascal_voc_20",
    "synthetic",
)
# Derived: the 171 COCO-Stuff classes minus the 15 unseen ones of the zero-shot split, in contiguous-id order.
_DERIVED_VOCABULARIES = ("coco_stuff_156_seen",)
# Datasets that have a seen / unseen split, and the files naming their unseen classes.
_UNSEEN_SPLITS = {"coco_stuff": ("coco_stuff_171", "coco_stuff_unseen_15")}


def available_vocabularies() -> list[str]:
    """Names accepted by [`load_vocabulary`], sorted.

    Example:

    ```python
    >>> from maft_hf.inference.vocabulary import available_vocabularies
    >>> "ade20k_150" in available_vocabularies()
    True
    ```"""
    return sorted(_FILE_VOCABULARIES + _DERIVED_VOCABULARIES)


def _read_package_text(filename: str) -> str:
    return resources.files("maft_hf").joinpath(VOCAB_DIRECTORY).joinpath(filename).read_text(encoding="utf-8")


def parse_vocabulary_lines(text: str) -> list[str]:
    """Class names from the text of a vocabulary file.

    Rules: one class per line; surrounding whitespace is stripped; blank lines and lines starting with `#` are
    skipped; a line with tab characters is a table row whose **last** column is the name (the format of
    `coco_stuff_unseen_15.txt`: index, COCO id, PNG value, name). Commas are kept (synonyms).
    """
    names = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in stripped:
            stripped = stripped.split("\t")[-1].strip()
        names.append(stripped)
    return names


def read_vocabulary_file(path: str | os.PathLike) -> list[str]:
    """Read a user vocabulary file (UTF-8, one class per line; rules of [`parse_vocabulary_lines`])."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Cannot read vocabulary file {os.fspath(path)!r}: {err}") from err
    return parse_vocabulary_lines(text)


def _unseen_rows(dataset: str) -> list[tuple[int, str]]:
    """`(contiguous index, name)` of each unseen class of `dataset`, checked against the full vocabulary."""
    full_name, unseen_name = _UNSEEN_SPLITS[dataset]
    full = parse_vocabulary_lines(_read_package_text(f"{full_name}.txt"))
    rows = []
    for line in _read_package_text(f"{unseen_name}.txt").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        columns = line.split("\t")
        index, name = int(columns[0]), columns[-1].strip()
        if full[index] != name:
            raise ValueError(
                f"{unseen_name}.txt row {line!r} does not match {full_name}.txt entry {index} ({full[index]!r})."
            )
        rows.append((index, name))
    return rows


def unseen_class_indices(dataset: str = "coco_stuff") -> list[int]:
    """Contiguous ids of the unseen classes of a zero-shot split, sorted.

    Args:
        dataset: `"coco_stuff"` (the 156 seen / 15 unseen split of paper Tab. 1; `"coco_stuff_171"` is accepted too).

    Returns:
        The 15 contiguous class ids (0..170) of the unseen COCO-Stuff classes.

    Example:

    ```python
    >>> from maft_hf.inference.vocabulary import unseen_class_indices
    >>> unseen_class_indices("coco_stuff")[:3]
    [19, 23, 28]
    ```"""
    key = "coco_stuff" if dataset == "coco_stuff_171" else dataset
    if key not in _UNSEEN_SPLITS:
        raise ValueError(f"No seen/unseen split is shipped for {dataset!r}; expected one of {sorted(_UNSEEN_SPLITS)}.")
    return sorted(index for index, _ in _unseen_rows(key))


def _load_shipped(name: str) -> list[str]:
    if name == "coco_stuff_156_seen":
        unseen = set(unseen_class_indices("coco_stuff"))
        full = _load_shipped("coco_stuff_171")
        return [n for i, n in enumerate(full) if i not in unseen]
    if name == "coco_stuff_unseen_15":
        return [n for _, n in sorted(_unseen_rows("coco_stuff"))]
    return parse_vocabulary_lines(_read_package_text(f"{name}.txt"))


def validate_vocabulary(names: Sequence[str]) -> list[str]:
    """Check a vocabulary and return it as a new list of stripped names.

    Raises `ValueError` for: a vocabulary that is not a sequence of strings, an empty vocabulary, an empty (or
    all-whitespace) name (its index is given), and duplicate names. Duplicates are compared after stripping and
    lower-casing, since CLIP's tokenizer lower-cases and two such names would get identical text embeddings; the
    message lists every duplicated name with its indices.
    """
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ValueError(f"A vocabulary must be a list of class-name strings, got {type(names).__name__}.")
    if len(names) == 0:
        raise ValueError("The vocabulary is empty; at least one class name is required.")
    cleaned = []
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise ValueError(f"Class name at index {index} must be a string, got {type(name).__name__} ({name!r}).")
        if not name.strip():
            raise ValueError(f"Class name at index {index} is empty ({name!r}); every class needs a name.")
        cleaned.append(name.strip())
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(cleaned):
        positions.setdefault(name.lower(), []).append(index)
    duplicates = {key: idx for key, idx in positions.items() if len(idx) > 1}
    if duplicates:
        described = ", ".join(f"{cleaned[idx[0]]!r} at indices {idx}" for idx in duplicates.values())
        raise ValueError(f"The vocabulary has duplicate class names (compared case-insensitively): {described}.")
    return cleaned


def load_vocabulary(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """Load a vocabulary: a list of class names, a shipped vocabulary name, or a text file.

    Args:
        spec: one of, tried in this order,
            - a list / tuple of class names (returned stripped and validated, as a new list);
            - a shipped name from [`available_vocabularies`] (`"coco_stuff_171"`, `"coco_stuff_156_seen"`,
              `"coco_stuff_unseen_15"`, `"ade20k_150"`, `"ade20k_847"`, `"pascal_context_59"`,
              `"pascal_context_459"`, `"pascal_voc_20"`, `"synthetic"`);
            - the path of a UTF-8 text file with one class per line (`#` comments and blank lines skipped).
            A string is never split: `"cat, kitty"` is not a vocabulary (it is one class name with a synonym).

    Returns:
        `list[str]`, index `i` = contiguous class id `i`.

    Raises:
        ValueError: unknown name and no such file, unreadable file, or an invalid vocabulary (see
        [`validate_vocabulary`]).

    Example:

    ```python
    >>> from maft_hf.inference.vocabulary import load_vocabulary
    >>> len(load_vocabulary("coco_stuff_156_seen"))
    156
    >>> load_vocabulary(["cat", "dog, puppy"])
    ['cat', 'dog, puppy']
    ```"""
    if isinstance(spec, (list, tuple)):
        return validate_vocabulary(spec)
    if isinstance(spec, str) and spec in available_vocabularies():
        return validate_vocabulary(_load_shipped(spec))
    if isinstance(spec, (str, os.PathLike)):
        if os.path.isfile(spec):
            names = read_vocabulary_file(spec)
            if not names:
                raise ValueError(f"Vocabulary file {os.fspath(spec)!r} has no class names.")
            return validate_vocabulary(names)
        raise ValueError(
            f"{os.fspath(spec)!r} is neither a shipped vocabulary ({', '.join(available_vocabularies())}) nor an "
            "existing file. Pass a list of class names for a custom vocabulary."
        )
    raise ValueError(
        "A vocabulary spec must be a list of names, a shipped vocabulary name or a file path, "
        f"got {type(spec).__name__}."
    )


def parse_vocabulary_argument(value: str) -> list[str]:
    """A vocabulary given on a command line: a shipped name, a text file, or comma-separated class names.

    The value is split on commas **only** when it is neither a shipped vocabulary name nor an existing file, so
    `"cat,dog, puppy"` is three classes; names with synonyms (`"dog, puppy"` as one class) need a file. Raises
    `ValueError` for an empty value, a value that looks like a missing file (`*.txt` or a path separator and no
    comma), empty names (`"cat,,dog"`) and duplicates.

    Example:

    ```python
    >>> from maft_hf.inference.vocabulary import parse_vocabulary_argument
    >>> parse_vocabulary_argument("cat, dog,bird")
    ['cat', 'dog', 'bird']
    >>> len(parse_vocabulary_argument("ade20k_150"))
    150
    ```"""
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
    """Sorted ids (into `class_names`) of the unseen classes of a zero-shot split.

    `spec` is a command-line value (a shipped vocabulary name or file of names, or comma-separated names and / or
    ids: `"cow,giraffe"`, `"3,7"`) or an iterable of names and ids. Names match exactly, else case-insensitively.
    Raises `ValueError` naming the classes that are not in the vocabulary and ids outside `[0, C)`.
    """
    if isinstance(spec, str):
        if spec in available_vocabularies() or os.path.isfile(spec):
            items: list = load_vocabulary(spec)
        else:
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
    """The 14 prompt templates of the released MAFT code, verbatim (some have no final period).

    Each template has one `{}` placeholder for the class name.

    Example:

    ```python
    >>> from maft_hf.inference.vocabulary import load_prompt_templates
    >>> load_prompt_templates()[0].format("cat")
    'a photo of a cat.'
    ```"""
    templates = [line for line in _read_package_text("prompt_templates.txt").splitlines() if line.strip()]
    validate_templates(templates)
    return templates


def validate_templates(templates: Sequence[str]) -> list[str]:
    """Check prompt templates: a non-empty list of strings with exactly one `{}` each. Returns them as a list."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f"Prompt templates must be a non-empty list of strings, got {templates!r}.")
    for index, template in enumerate(templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"Prompt template at index {index} must be a string with exactly one '{{}}' placeholder, "
                f"got {template!r}."
            )
    return list(templates)


__all__ = [
    "available_vocabularies",
    "load_vocabulary",
    "load_prompt_templates",
    "parse_vocabulary_argument",
    "parse_vocabulary_lines",
    "read_vocabulary_file",
    "unseen_class_indices",
    "unseen_class_ids",
    "validate_templates",
    "validate_vocabulary",
]
