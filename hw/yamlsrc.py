"""YAML sources (training configs, hardware presets) read as nodes, so errors can name FILE:LINE."""
from __future__ import annotations

import yaml

from hw.errors import BinbertError


def root_node(loader: yaml.SafeLoader, source: str):
    """The document's root node (None for an empty file); a syntax error becomes one
    ``SOURCE:LINE: YAML syntax error: ...`` BinbertError."""
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BinbertError(f"{source}{line}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise BinbertError(f"{source}: YAML error: {exc}") from None
