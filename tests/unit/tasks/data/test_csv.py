"""Reading CSV (issue 12, point 11): quoted fields, other delimiters, and errors that name the
file, line, column and value."""

import gzip
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.config import DEFAULT_DATASET_SPEC
from tasks.data.csv_reader import parse_csv, read_csv
from tasks.dataset_spec import DatasetSpec
from tasks.errors import DataError
from tests.conftest import PIMA_CSV

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
TEXT = PIMA_CSV.read_text()
ORIGINAL = np.loadtxt(PIMA_CSV, delimiter=",")
PEOPLE = (
    'name,city,age,score\r\n"Smith, J.","Paris",41,"0.5"\r\n'
    '"O\'Brien ""Jr""",Rome,  37 ,1.25\r\nLee,"",29,2\r\n\r\n\r\n'
)


def write(tmp_path, content: str | bytes, name: str = "data.csv"):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def people_spec(**fields) -> DatasetSpec:
    values = {"name": "people", "url": "https://example.invalid/x", "header": True}
    return DatasetSpec(**{**values, "target": "score", "task": "regression", **fields})


def test_quoted_fields_crlf_and_trailing_blank_lines_are_read(tmp_path):
    frame, spec = read_csv(write(tmp_path, PEOPLE), people_spec(features=["age"]))
    assert spec.columns == ["name", "city", "age", "score"]
    assert list(frame["name"]) == ["Smith, J.", 'O\'Brien "Jr"', "Lee"]
    assert list(frame["city"]) == ["Paris", "Rome", ""]  # ignored: may be empty
    assert list(frame["age"]) == [41.0, 37.0, 29.0]
    assert list(frame["score"]) == [0.5, 1.25, 2.0]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_spec_delimiter_reads_the_file_to_the_same_values(tmp_path, delimiter):
    path = write(tmp_path, TEXT.replace(",", delimiter))
    frame = parse_csv(path, SPEC.model_copy(update={"delimiter": delimiter}))
    np.testing.assert_array_equal(frame.to_numpy(), ORIGINAL)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_file_that_splits_better_on_another_delimiter_says_so(tmp_path, delimiter):
    path = write(tmp_path, TEXT.replace(",", delimiter))
    expected = (
        f"{path}, line 1 splits into 9 fields on {delimiter!r} but 1 on ',': "
        f"set `delimiter: {json.dumps(delimiter)}` in the dataset spec"
    )
    with pytest.raises(DataError) as caught:
        parse_csv(path, SPEC)
    assert str(caught.value) == expected


def test_a_semicolon_file_with_decimal_commas_is_told_about_the_delimiter(tmp_path):
    path = write(tmp_path, "6;148;72;35;0;33,6;0,627;50;1\n1;85;66;29;0;26,6;0,351;31;0\n")
    with pytest.raises(DataError, match=r"line 1 splits into 9 fields on ';' but 3 on ','"):
        parse_csv(path, SPEC)


def test_a_header_file_with_another_delimiter_says_so(tmp_path):
    path = write(tmp_path, PEOPLE.replace(",", ";"))
    with pytest.raises(DataError, match=r"splits into \d fields on ';' but 1 on ','"):
        read_csv(path, people_spec())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            PEOPLE.replace('"Paris",41', '"Paris",41,7'),
            r"data\.csv, line 2: expected 4 columns, found 5",
            id="extra-field",
        ),
        pytest.param(
            PEOPLE.replace("Rome", '"Ro\nme"'),
            r"data\.csv, line 3, column 'city': a quoted value spans lines",
            id="newline-inside-quotes",
        ),
        pytest.param(
            PEOPLE.replace("Lee", '"Lee'),
            r"data\.csv, line 4: .*(quote|columns)",
            id="unclosed-quote",
        ),
        pytest.param(
            PEOPLE.replace("\r\n\r\n\r\n", "\r\n\r\n7,8,9,10\r\n"),
            r"data\.csv, line 5 is blank: blank lines are allowed only at the end",
            id="inner-blank-line",
        ),
        pytest.param(
            PEOPLE.replace("name,city", "name,"),
            r"data\.csv, line 1 \(header\): column 2 has no name",
            id="unnamed-column",
        ),
    ],
)
def test_bad_quoted_files_are_refused_naming_file_line_column_value(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_csv(write(tmp_path, content), people_spec(features=["age"]))


def test_text_in_a_column_forced_numeric_is_refused_naming_file_line_column_value(tmp_path):
    """Issue 25 made text in a feature column a category; `numeric:` keeps today's refusal."""
    path = write(tmp_path, PEOPLE.replace("41", '"forty"'))
    message = r"data\.csv, line 2, column 'age': value 'forty' is not a number"
    with pytest.raises(DataError, match=message):
        read_csv(path, people_spec(features=["age"], numeric=["age"]))


def test_text_that_is_not_utf8_is_refused_naming_the_line(tmp_path):
    lines = TEXT.encode().split(b"\n")
    lines[6] = lines[6].replace(b",", b",\xff", 1)
    with pytest.raises(DataError, match=r"data\.csv, line 7 is not UTF-8 text"):
        parse_csv(write(tmp_path, b"\n".join(lines)), SPEC)


def test_a_short_row_that_is_not_utf8_is_refused_naming_the_line_without_a_stray_error(
    tmp_path,
):
    """pyarrow decodes a row of the wrong length before handing it to the reader: a byte that
    is not UTF-8 there raised inside pyarrow ("Exception ignored" on stderr) and the refusal
    was pyarrow's own message, before this fix."""
    lines = TEXT.encode().split(b"\n")
    lines[6] = lines[6].split(b",", 1)[0] + b",\xff"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"data\.csv, line 7 is not UTF-8 text"):
            parse_csv(write(tmp_path, b"\n".join(lines)), SPEC)


def test_a_gzip_compressed_file_is_refused_by_name(tmp_path):
    path = write(tmp_path, gzip.compress(TEXT.encode()), "data.csv")
    with pytest.raises(DataError, match=r"data\.csv is gzip-compressed, not CSV text"):
        parse_csv(path, SPEC)


def test_a_parquet_file_read_as_csv_is_told_to_set_the_format(tmp_path):
    pd.DataFrame(ORIGINAL, columns=SPEC.columns).to_parquet(tmp_path / "data.csv")
    message = r"data\.csv is a Parquet file, not CSV: set `format: parquet`"
    with pytest.raises(DataError, match=message):
        parse_csv(tmp_path / "data.csv", SPEC)


@pytest.mark.parametrize("delimiter", ['"', "\n", "ab", ""])
def test_the_delimiter_must_be_one_plain_character(delimiter):
    with pytest.raises(ValidationError, match="delimiter"):
        DatasetSpec.model_validate({**SPEC.model_dump(), "delimiter": delimiter})
