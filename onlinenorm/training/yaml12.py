"""Reading YAML (and JSON) as researchers write numbers: YAML 1.2's numbers on PyYAML's safe loader.

PyYAML resolves plain scalars by YAML 1.1, where a float needs a dot, so
``eps: 1e-5``, ``lr: 5e-4`` and JSON's ``1e-05`` come back as strings.
:func:`load_yaml` reads every number notation of the YAML 1.2 core schema
(which includes all of JSON's) as a number; everything else is PyYAML's safe
loading. Every place the product reads YAML (sweep specs, training configs,
``--set`` values, the ``config.json``/``params.json`` it wrote) goes through it.
"""

from __future__ import annotations

import re
from typing import IO, Any

import yaml

__all__ = ["YAMLError", "load_yaml"]

YAMLError = yaml.YAMLError

# YAML 1.2 core schema floats: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, and .inf / .nan.
# An integer (no dot, no exponent) still resolves as an int by PyYAML's own, earlier-listed rule.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_FLOAT_FIRST = list("-+0123456789.")
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule in place of YAML 1.1's."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, _FLOAT_FIRST)


def load_yaml(stream: str | bytes | IO) -> Any:
    """The document in ``stream`` (YAML or JSON text, or an open file), numbers read as YAML 1.2 reads them.

    Raises:
        yaml.YAMLError: the text is not valid YAML.
    """
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
