"""The dataset spec: where a dataset comes from, how to read it, which columns mean what.

Validated before any training starts, with messages that name the key and the value received.
Kept apart from the run and search configs (tasks.config), which refer to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.errors import ConfigError
from tasks.messages import MAX_PROBLEMS_LISTED, bounded_repr, shorten
from tasks.yaml_input import read_yaml_mapping

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Task = Literal["binary", "multiclass", "regression"]
SourceFormat = Literal["csv", "parquet"]


def safe_name(value: str, what: str) -> str:
    """Refuse names that could steer a path outside its folder ('..', '/', empty)."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ConfigError(
            f"{what} {value!r} is not a safe name: {_unsafe_part(value)}; use ASCII letters "
            "(A-Z, a-z), digits, '.', '_' and '-' only, starting with a letter or digit "
            "(no path separators, no '..', at most 100 characters)"
        )
    return value


def _unsafe_part(value: str) -> str:
    """What exactly makes `value` unsafe, for the refusal's first words."""
    if not value:
        return "it is empty"
    if len(value) > 100:
        return f"it is {len(value)} characters long"
    if ".." in value:
        return "it holds '..'"
    if not re.match(r"[A-Za-z0-9]", value[0]):
        return f"it starts with {value[0]!r}"
    bad = next(c for c in value if not re.match(r"[A-Za-z0-9._-]", c))
    return f"{bad!r} (U+{ord(bad):04X}) is not an ASCII letter, digit, '.', '_' or '-'"


def pydantic_message(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors()[:MAX_PROBLEMS_LISTED]:
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        received = bounded_repr(item.get("input"))
        problems.append(f"{shorten(key, 200)}: {shorten(item['msg'], 300)} (received {received})")
    if error.error_count() > len(problems):
        problems.append(f"and {error.error_count() - len(problems)} more problem(s)")
    return f"{source}: " + "; ".join(problems)


# Cells that mean "missing" unless the spec says otherwise, and the most categories a column
# may have before it is refused (an id or free text column is not a category).
DEFAULT_MISSING_VALUES = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL")
DEFAULT_MAX_CATEGORIES = 200


class DatasetSpec(BaseModel):
    """Where a dataset comes from, how to read it, which columns to learn from and what to predict.

    `columns` names a headerless CSV's columns; a CSV with a header row and a Parquet file
    name their own columns, and `columns`, if given, must then match them.
    """

    model_config = ConfigDict(extra="forbid")

    # A spec file without a name is named after the file (from_yaml); without a url, the
    # data comes from --data (or config.run.source) alone.
    name: str
    url: str = Field(default="", description="where the file comes from (default: --data only)")
    sha256: str | None = None
    format: SourceFormat = Field(default="csv", description="csv or parquet")
    header: bool = Field(default=False, description="csv only: the first line names the columns")
    delimiter: str = Field(
        default=",", description="csv only: the one character between fields (',' ';' tab '|')"
    )
    columns: list[str] | None = Field(default=None, min_length=2)
    target: str
    features: list[str] | None = Field(
        default=None, min_length=1, description="feature columns (default: all but the target)"
    )
    task: Task = Field(default="binary", description="binary, multiclass or regression")
    impossible_zero_columns: list[str] = Field(
        default=[], description="zero means 'missing' here: reported, and imputed on request"
    )
    max_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="largest file accepted, in bytes (default 2 GiB)"
    )
    missing_values: list[str] = Field(
        default=list(DEFAULT_MISSING_VALUES),
        description="cells that mean 'missing' (an empty cell always does)",
    )
    categorical: list[str] = Field(
        default=[], description="feature columns read as categories even if they hold numbers"
    )
    numeric: list[str] = Field(
        default=[], description="feature columns that must hold numbers (text is refused)"
    )
    max_categories: int = Field(
        default=DEFAULT_MAX_CATEGORIES,
        ge=2,
        description="most distinct values a categorical column may have",
    )
    positive_label: bool | int | str | None = Field(
        default=None,
        description="binary: the positive class (default: the second of the two, sorted)",
    )
    drop_missing_target: bool = Field(
        default=False, description="drop rows whose target is missing (else they are refused)"
    )

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, value: str) -> str:
        return safe_name(value, "dataset name")

    @field_validator("sha256")
    @classmethod
    def _sha256_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value.lower() if value else value

    @field_validator("delimiter")
    @classmethod
    def _delimiter_is_one_plain_character(cls, value: str) -> str:
        if len(value) != 1 or value in '"\r\n':
            raise ValueError(
                f"delimiter must be one character other than a quote or a line break, got {value!r}"
            )
        return value

    @property
    def feature_columns(self) -> list[str]:
        """Features in the file's column order (the model's input order)."""
        columns = self._known_columns()
        chosen = self.features or [c for c in columns if c != self.target]
        return [column for column in columns if column in chosen]

    @property
    def used_columns(self) -> list[str]:
        """Features and target in the file's order; any other column is ignored."""
        features = set(self.feature_columns)
        return [c for c in self._known_columns() if c in features or c == self.target]

    def _known_columns(self) -> list[str]:
        if self.columns is None:
            raise ConfigError(
                f"dataset spec {self.name!r}: its columns are known only once the file is read"
            )
        return self.columns

    def model_post_init(self, __context: Any) -> None:
        if self.format == "parquet" and self.header:
            raise ConfigError("dataset spec: header applies to CSV only (Parquet names columns)")
        if self.columns is None and self.format == "csv" and not self.header:
            raise ConfigError(
                "dataset spec: a CSV without a header row needs `columns` (the names, in order)"
            )
        if self.features is not None:
            if self.target in self.features:
                raise ConfigError(
                    f"dataset spec: target {self.target!r} is also listed among the features"
                )
            _refuse_duplicates(self.features, "features")
        if self.columns is not None:
            self.check_columns(self.columns, "dataset spec")

    def check_columns(self, columns: list[str], source: str) -> None:
        """Target, features and zero-coded columns must all be among `columns`."""
        _refuse_duplicates(columns, f"{source}: columns")
        if self.target not in columns:
            raise ConfigError(
                f"{source}: target {self.target!r} is not among the columns {columns}"
            )
        missing = [c for c in self.features or [] if c not in columns]
        if missing:
            raise ConfigError(f"{source}: feature column(s) {missing} are not among {columns}")
        unknown = [c for c in self.impossible_zero_columns if c not in columns]
        if unknown:
            raise ConfigError(f"{source}: impossible_zero_columns {unknown} are not columns")
        if self.target in self.impossible_zero_columns:
            raise ConfigError(f"{source}: the target {self.target!r} cannot be zero-coded")
        self._check_kinds(columns, source)

    def _check_kinds(self, columns: list[str], source: str) -> None:
        """`categorical` and `numeric` name feature columns, each at most once."""
        for key in ("categorical", "numeric"):
            named: list[str] = getattr(self, key)
            _refuse_duplicates(named, f"{source}: {key}")
            unknown = [c for c in named if c not in columns]
            if unknown:
                raise ConfigError(f"{source}: {key} {unknown} are not among the columns {columns}")
            if self.target in named:
                raise ConfigError(
                    f"{source}: the target {self.target!r} cannot be listed under `{key}` "
                    "(its kind follows the task)"
                )
        both = [c for c in self.categorical if c in self.numeric]
        if both:
            raise ConfigError(f"{source}: {both} are listed as both categorical and numeric")
        coded = [c for c in self.impossible_zero_columns if c in self.categorical]
        if coded:
            raise ConfigError(
                f"{source}: impossible_zero_columns {coded} are categorical; zero-coding "
                "applies to numeric columns"
            )

    def with_file_columns(self, columns: list[str], source: str) -> DatasetSpec:
        """This spec with the columns a file names (header or Parquet schema), checked."""
        if self.columns is not None and list(columns) != self.columns:
            raise ConfigError(
                f"{source}: the file's columns {list(columns)} differ from the spec's "
                f"columns {self.columns}"
            )
        self.check_columns(list(columns), source)
        return self.model_copy(update={"columns": list(columns)})

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetSpec:
        path = Path(path)
        raw = read_yaml_mapping(path)
        raw.setdefault("name", re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-") or "data")
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise ConfigError(pydantic_message(error, f"dataset spec {path}")) from None
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _refuse_duplicates(names: list[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{what}: {repeated} appear more than once")
