"""The `Example:` blocks in the docstrings of the model classes run as written."""

import doctest
import inspect

import pytest

from maft_hf.model import configuration_maft, images, modeling_maft, processing_maft


@pytest.mark.parametrize(
    "module", [configuration_maft, modeling_maft, processing_maft, images], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module):
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    documented = [
        module,
        *(obj for _, obj in inspect.getmembers(module) if getattr(obj, "__module__", None) == module.__name__),
    ]
    documented += [m for obj in documented if inspect.isclass(obj) for m in vars(obj).values() if inspect.isfunction(m)]
    examples = 0
    for obj in documented:
        text = "\n".join(line for line in (obj.__doc__ or "").splitlines() if not line.strip().startswith("```"))
        test = parser.get_doctest(text, dict(vars(module)), getattr(obj, "__qualname__", module.__name__), None, 0)
        examples += len(test.examples)
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    if module is not images:
        assert examples > 0
