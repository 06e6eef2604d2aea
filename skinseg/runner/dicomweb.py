"""A PACS over DICOMweb: the image instances of a study fetched by WADO-RS (into the run's output
folder, so a run segments them like a folder and `--resume` does not fetch them again), and each
SEG sent back by STOW-RS. dicomweb-client speaks the protocol (the `[dicom]` extra).

A bearer token comes from $SKINSEG_DICOMWEB_TOKEN or a file (never a flag's value: command lines are
visible to other users); TLS is used when the URL says https. A PACS that does not answer is one
usage error within TIMEOUT seconds, not a hang.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinseg.shared import files
from skinseg.shared.errors import InputError, SkinsegError

TIMEOUT = 10.0  # s: connecting to and each answer from the PACS
TOKEN_ENV = "SKINSEG_DICOMWEB_TOKEN"
NOT_IMAGES = {"SEG": "segmentations", "SR": "structured reports", "KO": "key-object selections",
              "PR": "presentation states"}  # listed in the study, never fetched: results, not images
TAGS = {"series": "0020000E", "sop": "00080018", "class": "00080016", "modality": "00080060"}


@dataclass
class Instance:
    series: str
    sop: str
    modality: str


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: the file's first line with --dicomweb-token-file, else $SKINSEG_DICOMWEB_TOKEN."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SkinsegError(f"--dicomweb-token-file {token_file}: cannot read it ({exc})") from None
        if not token or not token[0].strip():
            raise SkinsegError(f"--dicomweb-token-file {token_file}: the file is empty; put the token on its "
                               "first line")
        return token[0].strip()
    return os.environ.get(TOKEN_ENV) or None


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class Pacs:
    """One DICOMweb service (its root URL, e.g. http://pacs:8042/dicom-web)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        try:
            from dicomweb_client.api import DICOMwebClient
        except ImportError:
            from skinseg.shared.install import install_hint

            raise SkinsegError(f"--dicomweb needs the [dicom] extra: {install_hint('cpu,dicom')}") from None
        if not url.startswith(("http://", "https://")):
            raise SkinsegError(f"--dicomweb {url}: expected an http:// or https:// URL of the DICOMweb root "
                               "(e.g. http://pacs:8042/dicom-web)")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.client = DICOMwebClient(url=self.url, headers=headers, timeout=timeout)
        # a busy PACS (429/503/504) gets two more tries within about a second; its default of five tries with
        # exponential waits took 31 s to say that a PACS is down
        self.client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)
        self.timeout = timeout

    def _call(self, what: str, fn: Any, *args: Any, one: bool = False, **kwargs: Any) -> Any:
        """One request; a PACS that is down or slow is one clear line (exit code 2); an HTTP error about
        `one` instance costs that instance only (an InputError: its error row)."""
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.Timeout:
            raise SkinsegError(f"--dicomweb {self.url}: no answer to {what} within {self.timeout:g} s; check the "
                               "URL and that the PACS is running") from None
        except requests.exceptions.ConnectionError as exc:
            raise SkinsegError(f"--dicomweb {self.url}: cannot connect for {what} ({_reason(exc)}); check the URL "
                               "and that the PACS is running") from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            hint = {401: f"; set ${TOKEN_ENV} or --dicomweb-token-file", 403: "; the token may lack the rights",
                    404: "; check the UID and the URL's DICOMweb root"}.get(status, "")
            raise (InputError if one else SkinsegError)(f"--dicomweb {self.url}: {what} answered HTTP "
                                                        f"{status}{hint}") from None

    def instances(self, study: str, series: str | None = None) -> tuple[list[Instance], dict[str, int]]:
        """The study's (or series') instances to segment, and how many results were left out, by kind."""
        found = self._call(f"the search for study {study}", self.client.search_for_instances,
                           study_instance_uid=study, series_instance_uid=series, get_remaining=True) or []
        images, skipped = [], {}
        for item in found:
            modality = _value(item, TAGS["modality"])
            if modality in NOT_IMAGES:
                skipped[NOT_IMAGES[modality]] = skipped.get(NOT_IMAGES[modality], 0) + 1
                continue
            images.append(Instance(_value(item, TAGS["series"]), _value(item, TAGS["sop"]), modality))
        if not found:
            raise SkinsegError(f"--study {study}: the PACS at {self.url} has no instances in it"
                               + (f" (series {series})" if series else "") + "; check the UID")
        return images, skipped

    def fetch(self, study: str, inst: Instance, folder: Path) -> Path:
        """The instance as a Part 10 file in `folder` (kept: a resumed run does not fetch it again)."""
        from pydicom import dcmwrite

        path = folder / f"{files.safe_stem(inst.sop)}.dcm"
        if path.is_file() and path.stat().st_size > 0:
            return path
        ds = self._call(f"the retrieval of instance {inst.sop}", self.client.retrieve_instance, study,
                        inst.series, inst.sop, media_types=(("application/dicom", "*"),), one=True)
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        files.write_bytes(path, buf.getvalue())
        return path

    def store(self, seg: bytes) -> None:
        """STOW-RS one SEG into its study."""
        from pydicom import dcmread

        ds = dcmread(io.BytesIO(seg))
        self._call(f"storing SEG {ds.SOPInstanceUID}", self.client.store_instances, [ds],
                   study_instance_uid=str(ds.StudyInstanceUID), one=True)

    def fetch_all(self, study: str, found: list[Instance], folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
        """The instances into `folder`: (files, (instance, reason) for those that could not be fetched)."""
        files.ensure_writable_dir(folder)
        paths, errors = [], []
        for inst in found:
            try:
                paths.append(self.fetch(study, inst, folder))
            except InputError as exc:
                errors.append((inst.sop, str(exc)))
        return paths, errors


def _reason(exc: Exception) -> str:
    text = str(exc)
    for word in ("Connection refused", "Name or service not known", "No route to host", "certificate verify failed"):
        if word in text:
            return word.lower()
    return type(exc).__name__
