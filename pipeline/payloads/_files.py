"""Builders for the file endpoints: an upload (multipart) and a fine-tuning job."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.request import APIRequest, FilePart
from pipeline.errors import PayloadError
from pipeline.payloads._builder import Builder, Row
from pipeline.payloads.schemas import (
    FileUploadRequest,
    FineTuningJobRequest,
    to_body,
    validate,
)
from pipeline.payloads.templates import (
    _column,
    _is_missing,
    _plain,
    _split_row,
    as_mapping,
)

__all__ = ["FileUploadBuilder", "FineTuningJobBuilder"]


class FineTuningJobBuilder(Builder):
    """Fine-tuning job requests (``POST fine_tuning/jobs``).

    A string row is the ``training_file`` id; a mapping row supplies any request fields it has
    (other columns are ignored); overrides come last.

    >>> from pipeline.payloads import fine_tuning_job
    >>> job = fine_tuning_job(model="gpt-4o-mini-2024-07-18", seed=0)
    >>> job.build("file-abc123").body
    {'model': 'gpt-4o-mini-2024-07-18', 'training_file': 'file-abc123', 'seed': 0}
    """

    kind = "fine_tuning_job"
    path = "fine_tuning/jobs"
    request_type = FineTuningJobRequest
    __slots__ = ()

    def __init__(
        self, model: str | None = None, training_file: str | None = None, **fields: Any
    ) -> None:
        options = {"model": model, "training_file": training_file, **fields}
        super().__init__(options, options, None, None)
        self._check({"model": "placeholder", "training_file": "placeholder"})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The fine-tuning job request for ``row``."""
        values, text = _split_row(row)
        from_row: dict[str, Any] = {}
        if text is not None:
            from_row["training_file"] = text
        elif values is not None:
            known = FineTuningJobRequest.__struct_fields__
            from_row = {
                k: _plain(v) for k, v in values.items() if k in known and not _is_missing(v)
            }
        return self._request(self._merged({**from_row, **overrides}))


_JSONL_PURPOSES = frozenset({"fine-tune", "batch", "evals"})
_FILE_SOURCES = (str, bytes, bytearray, memoryview, os.PathLike)


class FileUploadBuilder(Builder):
    """File uploads (``POST files``, multipart): the file's bytes plus a ``purpose``.

    The file is the row (a path or bytes), else the row's ``file_column``, else the builder's
    ``file``. Paths are read when ``build`` runs. Bytes need a ``filename`` unless the purpose
    takes JSONL (``fine-tune``, ``batch``, ``evals``: then it defaults to ``upload.jsonl``).

    >>> from pipeline.payloads import file_upload
    >>> upload = file_upload(b'{"custom_id": "1"}\\n', purpose="batch")
    >>> request = upload.build()
    >>> request.files["file"], request.data
    (FilePart('upload.jsonl', 19 bytes, 'application/jsonl'), {'purpose': 'batch'})
    """

    kind = "file_upload"
    path = "files"
    request_type = FileUploadRequest
    __slots__ = ()

    def __init__(
        self,
        file: str | os.PathLike[str] | bytes | None = None,
        *,
        purpose: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        file_column: str | None = "file",
        expires_after: Mapping[str, Any] | None = None,
    ) -> None:
        options = {
            "file": file,
            "purpose": purpose,
            "filename": filename,
            "content_type": content_type,
            "file_column": None if file_column == "file" else file_column,
            "expires_after": expires_after,
        }
        super().__init__(options, {"purpose": purpose, "expires_after": expires_after}, None, None)
        self._check({"purpose": "user_data"})

    def build(self, row: Row = None, /, **overrides: Any) -> APIRequest:
        """The upload request; overrides may change ``purpose``, ``filename``, ``content_type``
        or ``expires_after``."""
        settings = {**self._options, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = set(overrides) - {"purpose", "filename", "content_type", "expires_after"}
        if unknown:
            name = sorted(unknown)[0]
            raise PayloadError(f"invalid file upload request: `{name}`: unknown field", field=name)
        source: Any = row
        if row is not None and not isinstance(row, _FILE_SOURCES):
            column = settings.get("file_column", "file")
            source = _column(as_mapping(row), column, "file upload")
        if source is None:
            source = settings.get("file")
        if source is None:
            raise PayloadError("no file: give a path or bytes as the row or as file=", field="file")
        form = to_body(
            validate(
                {k: settings[k] for k in ("purpose", "expires_after") if k in settings},
                FileUploadRequest,
            )
        )
        content, filename = _read(source, settings.get("filename"), form["purpose"])
        content_type = settings.get("content_type") or _guess_type(filename)
        data = {"purpose": form["purpose"]}
        if "expires_after" in form:
            data["expires_after[anchor]"] = form["expires_after"]["anchor"]
            data["expires_after[seconds]"] = str(form["expires_after"]["seconds"])
        return APIRequest(
            path=self.path,
            method=self.method,
            body=None,
            data=data,
            files={"file": FilePart(filename, content, content_type)},
        )


def _read(source: Any, filename: str | None, purpose: str) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        if filename is None:
            if purpose not in _JSONL_PURPOSES:
                raise PayloadError(
                    f"uploading bytes for purpose {purpose!r} needs a filename=", field="filename"
                )
            filename = "upload.jsonl"
        return bytes(source), filename
    try:
        path = Path(source)
        return path.read_bytes(), filename or path.name
    except (OSError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PayloadError(f"cannot read file {str(source)!r}: {reason}", field="file") from None


def _guess_type(filename: str) -> str:
    if filename.endswith(".jsonl"):
        return "application/jsonl"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
