"""Generates the method reference of docs/protocol.md from the registry's pydantic models,
so the doc cannot drift from the code (a test compares them)."""

from __future__ import annotations

import enum
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

BEGIN = "<!-- BEGIN GENERATED: methods (python -m assistantd.protodoc) -->"
END = "<!-- END GENERATED: methods -->"


def type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (list, tuple, set):
        return f"list[{', '.join(type_name(a) for a in args)}]"
    if origin is dict:
        return f"object[{', '.join(type_name(a) for a in args)}]"
    if t is type(None):
        return "null"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return " \\| ".join(f'"{m.value}"' for m in t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return t.__name__
    return {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any"}.get(
        t, getattr(t, "__name__", str(t))
    )


def fields_table(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> list[str]:
    if not model.model_fields:
        return ["(none)", ""]
    rows = ["| name | type | default |", "| --- | --- | --- |"]
    for name, f in model.model_fields.items():
        default = "required" if f.is_required() else _json(f.default)
        rows.append(f"| `{f.alias or name}` | {type_name(f.annotation)} | {default} |")
        _collect(f.annotation, seen)
    return [*rows, ""]


def _json(value: Any) -> str:
    import json

    try:
        return f"`{json.dumps(value.model_dump() if isinstance(value, BaseModel) else value)}`"
    except TypeError:
        return repr(value)


def _collect(t: Any, seen: dict[str, type[BaseModel]]) -> None:
    if isinstance(t, type) and issubclass(t, BaseModel):
        if t.__name__ not in seen:
            seen[t.__name__] = t
            for f in t.model_fields.values():
                _collect(f.annotation, seen)
        return
    for a in typing.get_args(t):
        _collect(a, seen)


def generate() -> str:
    from assistantd.daemon import Daemon

    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp) / "s.sock", Path(tmp) / "none.toml", Path(tmp))
    out = [BEGIN, ""]
    seen: dict[str, type[BaseModel]] = {}
    for name in sorted(d.registry.methods):
        m = d.registry.methods[name]
        out += [f"#### `{name}`", "", m.doc or "", "", "Params:", ""]
        out += fields_table(m.params, seen)
        out += [f"Result (`{m.result.__name__}`):", ""]
        out += fields_table(m.result, seen)
    nested = {
        k: v
        for k, v in seen.items()
        if k not in {m.result.__name__ for m in d.registry.methods.values()}
    }
    if nested:
        out += ["#### Types used above", ""]
        for name in sorted(nested):
            out += [f"`{name}`:", "", *fields_table(nested[name], {})]
    out.append(END)
    return "\n".join(out) + "\n"


def splice(doc: str, generated: str) -> str:
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END + "\n")
    return head + generated + tail


def main() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
    path.write_text(splice(path.read_text(), generate()))
    print(f"updated {path}")


if __name__ == "__main__":
    main()
