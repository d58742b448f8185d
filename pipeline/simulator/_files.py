"""Uploaded files and fine-tuning jobs, kept in memory.

``POST /v1/files`` takes a multipart form (``file``, ``purpose``); a ``fine-tune`` or ``batch``
file must be JSON Lines (one JSON object per non-empty line), as the real API checks.
A fine-tuning job reports ``validating_files`` when created, ``running`` until
``fine_tune_seconds`` have passed, then ``succeeded`` with a ``fine_tuned_model``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from pipeline.simulator._schemas import FineTuningJobRequest, RequestError
from pipeline.simulator._tokens import count_text_tokens

__all__ = ["FileStore", "parse_multipart"]

# Purposes accepted on upload that the spec's OpenAIFile object can also report back.
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str],
                                                             dict[str, tuple[str, bytes]]]:
    """Split a multipart/form-data body into text fields and files ``{name: (filename, data)}``."""
    _, _, params = content_type.partition(";")
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise RequestError("Expected a multipart/form-data body with a boundary.")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, value = item.strip().partition("=")
                    if key == "name":
                        name = value.strip('"')
                    elif key == "filename":
                        filename = value.strip('"')
        if name is None:
            continue
        if filename is not None:
            files[name] = (filename, content)
        else:
            fields[name] = content.decode("utf-8", "replace")
    return fields, files


def _check_jsonl(data: bytes, purpose: str) -> int:
    """Validate JSON Lines; return the text tokens it holds (for ``trained_tokens``)."""
    tokens = 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = msgspec.json.decode(line)
        except msgspec.DecodeError:
            item = None
        if not isinstance(item, dict):
            raise RequestError(f"Invalid file format for {purpose}: line {number} is not a JSON "
                               "object. The file must be JSON Lines (.jsonl).", "file")
        tokens += count_text_tokens(line.decode("utf-8", "replace"))
    if not tokens:
        raise RequestError(f"Invalid file format for {purpose}: the file is empty.", "file")
    return tokens


class FileStore:
    """Files and fine-tuning jobs of one simulator."""

    def __init__(self, fine_tune_seconds: float) -> None:
        self.fine_tune_seconds = fine_tune_seconds
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.file_tokens: dict[str, int] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._counter = 0

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-sim{self._counter:08d}"

    def upload(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Handle ``POST /files``; return the OpenAIFile object."""
        fields, files = parse_multipart(body, content_type)
        if "file" not in files:
            raise RequestError("Missing required parameter: 'file'.", "file",
                               "missing_required_parameter")
        purpose = fields.get("purpose")
        if purpose is None:
            raise RequestError("Missing required parameter: 'purpose'.", "purpose",
                               "missing_required_parameter")
        if purpose not in PURPOSES:
            raise RequestError(f"Invalid value for 'purpose': '{purpose}'. Expected one of "
                               f"{', '.join(PURPOSES)}.", "purpose", "invalid_value")
        filename, data = files["file"]
        tokens = _check_jsonl(data, purpose) if purpose in ("fine-tune", "batch") else 0
        file_id = self._next_id("file")
        obj = {"id": file_id, "object": "file", "bytes": len(data),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
               "status": "processed"}
        self.files[file_id] = obj
        self.contents[file_id] = data
        self.file_tokens[file_id] = tokens
        return obj

    def add(self, filename: str, data: bytes, purpose: str) -> str:
        """Keep a file the server made itself (a batch's output); return its id."""
        file_id = self._next_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": filename,
                               "purpose": purpose, "status": "processed"}
        self.contents[file_id] = data
        self.file_tokens[file_id] = 0
        return file_id

    def get_file(self, file_id: str) -> dict[str, Any]:
        """Handle ``GET /files/{id}``."""
        try:
            return self.files[file_id]
        except KeyError:
            raise RequestError(f"No such File object: {file_id}", "id", None, 404) from None

    def create_job(self, request: FineTuningJobRequest) -> dict[str, Any]:
        """Handle ``POST /fine_tuning/jobs``; return the FineTuningJob object."""
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is None:
                continue
            info = self.files.get(file_id)
            if info is None or info["purpose"] != "fine-tune":
                raise RequestError(f"invalid {param}: {file_id}", param, "invalid_value")
        job_id = self._next_id("ftjob")
        hyper = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
        hyper.update(request.hyperparameters or {})
        job = {"id": job_id, "object": "fine_tuning.job", "model": request.model,
               "created_at": int(time.time()), "finished_at": None, "fine_tuned_model": None,
               "organization_id": "org-simulator", "result_files": [],
               "status": "validating_files", "trained_tokens": None,
               "training_file": request.training_file,
               "validation_file": request.validation_file, "hyperparameters": hyper,
               "seed": request.seed if request.seed is not None else 42, "error": None,
               "metadata": request.metadata, "_started": time.monotonic(),
               "_suffix": request.suffix}
        self.jobs[job_id] = job
        return self._public(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Handle ``GET /fine_tuning/jobs/{id}``: the job as it stands now."""
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(f"No such fine-tuning job: {job_id}", "fine_tuning_job_id",
                               None, 404)
        if job["status"] != "succeeded":
            if time.monotonic() - job["_started"] >= self.fine_tune_seconds:
                epochs = job["hyperparameters"].get("n_epochs")
                epochs = epochs if isinstance(epochs, int) else 3
                suffix = job["_suffix"] or "simulator"
                job.update(status="succeeded", finished_at=int(time.time()),
                           fine_tuned_model=f"ft:{job['model']}:{suffix}::{job_id[-8:]}",
                           trained_tokens=self.file_tokens.get(job["training_file"], 0) * epochs)
            else:
                job["status"] = "running"
        return self._public(job)

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_") and
                not (k == "metadata" and v is None)}
