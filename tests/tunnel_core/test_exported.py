import ast
import importlib
import inspect
from pathlib import Path

import pytest

import tunnel_core


def test_all_lists_exactly_the_public_names_sorted():
    public = {name for name in dir(tunnel_core) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(tunnel_core, name))}
    assert sorted(tunnel_core.__all__) == tunnel_core.__all__
    assert set(tunnel_core.__all__) == public - modules


def test_type_checkers_and_the_lazy_loader_find_each_name_in_the_same_module():
    tree = ast.parse(Path(tunnel_core.__file__).read_text())
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "typing.TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == tunnel_core._MODULE_OF
    for name, module in imported.items():
        defining = importlib.import_module(f"tunnel_core.{module}")
        assert getattr(tunnel_core, name) is getattr(defining, name)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        tunnel_core.Nope  # noqa: B018
    with pytest.raises(ImportError):
        from tunnel_core import Nope  # noqa: F401
