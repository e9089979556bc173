"""A JSON Schema of sweep specs (`python -m bench spec --schema`), for editors that complete
and check YAML as it is typed. Built from the same tables `spec.parse_spec` checks against,
so the two cannot drift apart; the parser stays the authority on values (ranges, and the
names a registry or the hardware decides)."""
from __future__ import annotations

from bench.config.cell import PRECISIONS, SCALING_MODES
from bench.config.spec import (CONFIG_OVERRIDES, DEVICE_CHOICES, NAME_RE, field_types,
                               workload_defaults)

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
_NUMBER_LIST = {"type": "array", "items": {"type": "number"}, "minItems": 1}
_SIGMAS = {"anyOf": [{"type": "number"}, _NUMBER_LIST]}


def _property(annotation: str, default) -> dict:
    """The schema of one workload key from its Cell annotation ('int', 'str | None', ...)."""
    options = [a.strip() for a in annotation.split("|")]
    if options[0].startswith("tuple[float"):
        prop = dict(_SIGMAS)
    else:
        types = [_JSON_TYPES[o] for o in options if o in _JSON_TYPES]
        if "None" in options:
            types.append("null")
        prop = {"type": types[0] if len(types) == 1 else types}
    prop["default"] = default
    return prop


def spec_schema() -> dict:
    defaults = workload_defaults()
    workload = {key: _property(annotation, defaults[key])
                for key, annotation in field_types().items()}
    workload["device"]["enum"] = list(DEVICE_CHOICES)
    workload["scaling"]["enum"] = list(SCALING_MODES)
    configuration = {
        "type": "object", "additionalProperties": False, "required": ["strategy"],
        "properties": {"strategy": {"type": "string"},
                       "devices": {"type": ["integer", "null"], "minimum": 1},
                       "precision": {"enum": [*PRECISIONS, "amp"]},
                       "zero": {"type": ["integer", "null"], "enum": [0, 1, 2, 3, None]},
                       **{k: {"type": workload[k]["type"]} for k in CONFIG_OVERRIDES}}}
    names = {"anyOf": [{"type": "string"},
                       {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    matrix = {
        "models": names,
        "configurations": {"anyOf": [{"const": "study"}, {"type": "array", "minItems": 1,
                                                          "items": {"anyOf": [
                                                              {"type": "string"},
                                                              configuration]}}]},
        "noise": {"type": "array", "minItems": 1, "items": _SIGMAS},
        "scaling": {"anyOf": [{"enum": list(SCALING_MODES)},
                              {"type": "array", "items": {"enum": list(SCALING_MODES)}}]},
    }
    top = {"name": {"type": "string", "pattern": NAME_RE.pattern},
           "description": {"type": ["string", "null"]},
           "workload": {"type": "object", "additionalProperties": False,
                        "properties": workload},
           "matrix": {"type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": matrix}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "bench sweep spec", "type": "object", "additionalProperties": False,
            "properties": top}
