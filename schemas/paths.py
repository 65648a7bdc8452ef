"""The one policy for every file or URL a spec names: typed fields, checked against the data roots in the service.

A spec field that names a file, a directory, a glob or a URL is typed :data:`InputPath`, :data:`OutputPath`,
:data:`ReadPath` or :data:`TokenizerRef`, never a bare ``str``. Validation is free on the command line (whoever runs
the CLI already has the files); the service validates with a :class:`PathPolicy` in the pydantic context, and each
typed field then resolves inside the data roots or fails with a ``path_refused`` error naming the field (403).
``tests/test_path_policy.py`` walks every spec model so that a new file-naming field cannot be a plain ``str``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ValidationInfo
from pydantic_core import PydanticCustomError

GLOB_CHARS = frozenset("*?[]{}")
BUILTIN_TOKENIZERS = frozenset({"deepseek-v3", "deepseek-r1"})


class PathKind(Enum):
    """What a field does with its path; decides the checks beyond 'inside the roots'."""

    INPUT = "input"  # files, directories or globs that are read
    OUTPUT = "output"  # a directory the job owns and writes
    READ = "read"  # one regular file (or an index directory) that is read


class PathRefused(PermissionError):
    """A path or URL is outside what the policy allows; the message names the value and the rule."""


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]


def is_within(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies below it (compared by whole path components, never by string prefix)."""
    child, parent = child.rstrip("/"), parent.rstrip("/")
    return child == parent or child.startswith(parent + "/")


@dataclass(frozen=True)
class PathPolicy:
    """Local data roots (resolved, symlinks followed) plus object-store prefixes (``s3://bucket/prefix``).

    Only the schemes of the configured prefixes are allowed: with no ``s3://`` root, no ``s3://`` URL passes, and
    ``http(s)://``, ``memory://`` and every other scheme never do.
    """

    roots: tuple[str, ...]
    url_roots: tuple[str, ...] = ()
    protected: tuple[str, ...] = field(default=(), compare=False)  # files no output may contain (the job store)

    @classmethod
    def from_locations(cls, locations: list[str], protected: list[str] = ()) -> PathPolicy:  # type: ignore[assignment]
        local, remote = [], []
        for location in locations:
            if "://" in location:
                parsed = urlparse(location)
                if parsed.scheme != "s3" or not parsed.netloc or ".." in _parts(parsed.path):
                    raise ValueError(f"data root {location!r}: only local directories and s3://bucket[/prefix]")
                remote.append(f"s3://{parsed.netloc}/{'/'.join(_parts(parsed.path))}".rstrip("/"))
            else:
                local.append(os.path.realpath(location))
        if not local and not remote:
            raise ValueError("no data roots configured")
        return cls(tuple(local), tuple(remote), tuple(os.path.realpath(p) for p in protected))

    @property
    def locations(self) -> tuple[str, ...]:
        return self.roots + self.url_roots

    def inside(self, location: str) -> bool:
        """Whether an already-normalised local path or URL lies in a root (used again at ingest, per file)."""
        if "://" in location:
            return any(is_within(location, root) for root in self.url_roots)
        return any(is_within(os.path.realpath(location), root) for root in self.roots)

    def check(self, value: str, kind: PathKind) -> str:
        """The normalised, resolved form of ``value`` if the policy allows it; :class:`PathRefused` otherwise."""
        if not value or "\x00" in value:
            raise PathRefused(f"{value!r} is empty or holds a NUL byte")
        if "::" in value:  # fsspec's URL chaining would open another location than the one checked
            raise PathRefused(f"{value!r}: '::' (chained URLs) is not allowed")
        if ".." in _parts(value.split("://", 1)[-1]):
            raise PathRefused(f"{value!r}: '..' is not allowed in a path")
        if kind is not PathKind.INPUT and GLOB_CHARS & set(value):
            raise PathRefused(f"{value!r}: glob characters are allowed only in inputs")
        parsed = urlparse(value)
        if parsed.scheme not in ("", "file") and "://" in value:
            return self._check_url(value, parsed.scheme, kind)
        return self._check_local(parsed.path if parsed.scheme == "file" else value, kind)

    def _check_url(self, value: str, scheme: str, kind: PathKind) -> str:
        if not any(root.startswith(f"{scheme}://") for root in self.url_roots):
            raise PathRefused(f"{value!r}: the {scheme}:// scheme is not allowed here")
        parsed = urlparse(value)
        url = f"{scheme}://{parsed.netloc}/{'/'.join(_parts(parsed.path))}".rstrip("/")
        if not any(is_within(url, root) for root in self.url_roots):
            raise PathRefused(f"{value!r} is outside the data roots")
        if kind is PathKind.OUTPUT and url in self.url_roots:
            raise PathRefused(f"{value!r} is a data root itself; name a directory inside it")
        return url

    def _check_local(self, value: str, kind: PathKind) -> str:
        path = Path(value)
        resolved = os.path.realpath(path if path.is_absolute() else Path(self.roots[0] if self.roots else "/") / path)
        if not self.roots or not any(is_within(resolved, root) for root in self.roots):
            raise PathRefused(f"{value!r} is outside the data roots")
        if "::" in resolved:  # a link whose target reads as a chained URL
            raise PathRefused(f"{value!r} resolves to {resolved!r}, which holds '::'")
        if kind is PathKind.OUTPUT:
            if resolved in self.roots:
                raise PathRefused(f"{value!r} is a data root itself; name a directory inside it")
            if any(is_within(p, resolved) for p in self.protected):
                raise PathRefused(f"{value!r} would contain the service's job store")
        if kind is PathKind.READ and os.path.exists(resolved):
            mode = os.stat(resolved).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PathRefused(f"{value!r} is not a regular file")
        return resolved


@dataclass(frozen=True)
class PathMarker:
    """Annotation metadata that makes a field subject to the policy; ``builtins`` are names that are not paths."""

    kind: PathKind
    builtins: frozenset[str] = frozenset()


def _policed(marker: PathMarker) -> AfterValidator:
    def check(value: str, info: ValidationInfo) -> str:
        policy = (info.context or {}).get("path_policy")
        if policy is None or value in marker.builtins:
            return value
        try:
            return policy.check(value, marker.kind)
        except PathRefused as refused:
            raise PydanticCustomError("path_refused", "{reason}", {"reason": str(refused)}) from None

    return AfterValidator(check)


def _path_type(marker: PathMarker) -> Any:
    return Annotated[str, marker, _policed(marker)]


#: Files, directories or globs that a job reads (``input.url``).
InputPath = _path_type(PathMarker(PathKind.INPUT))
#: The directory a job owns and writes (``output.url``).
OutputPath = _path_type(PathMarker(PathKind.OUTPUT))
#: One file or directory read by a stage (benchmark files, a dedup index).
ReadPath = _path_type(PathMarker(PathKind.READ))
#: A built-in tokenizer name ('deepseek-v3', 'deepseek-r1'), or the path of a ``tokenizer.json`` (a read path).
TokenizerRef = _path_type(PathMarker(PathKind.READ, BUILTIN_TOKENIZERS))


def path_kind_of(annotation: Any) -> PathKind | None:
    """The policy kind carried by a field's annotation (also inside ``list[...]`` and ``... | None``)."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, PathMarker):
            return meta.kind
    for arg in getattr(annotation, "__args__", ()):
        kind = path_kind_of(arg)
        if kind is not None:
            return kind
    return None


def walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every field of a model and of the models nested in it, as ``(dotted name, annotation)``."""
    for name, info in model.model_fields.items():
        annotation = info.rebuild_annotation()
        yield f"{prefix}{name}", annotation
        for nested in _models_in(annotation):
            yield from walk_fields(nested, f"{prefix}{name}.")


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _models_in(arg)
