"""Where uploads and results live, and how an owner gets one back.

They go through Django's storage API only (the "private" alias of
settings.STORAGES): a folder under MEDIA_ROOT by default, an S3-compatible
bucket shared by every web and worker machine with MEDIA_STORAGE=s3.
Nothing here or in the callers assumes a local path. A picture reaches a
browser only through a view that checked its owner first: streamed by that
view, or, with MEDIA_SIGNED_URL_SECONDS, as a redirect to a presigned URL of
the store that stops working after that many seconds.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import storages
from django.core.signals import setting_changed
from django.db.models.fields.files import FieldFile
from django.dispatch import receiver
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.utils.functional import LazyObject, empty

PRIVATE_ALIAS = "private"


class PrivateStorage(LazyObject):
    """storages["private"], looked up again after the STORAGES setting changes
    (tests), the way Django's default_storage is."""

    def _setup(self) -> None:
        self._wrapped = storages[PRIVATE_ALIAS]


private_media = PrivateStorage()


@receiver(setting_changed)
def _private_storage_changed(*, setting: str, **kwargs) -> None:
    if setting in {"STORAGES", "MEDIA_ROOT"}:
        private_media._wrapped = empty


def private_file_response(file: FieldFile, *, content_type: str, filename: str) -> HttpResponse:
    """The answer to an owner's request for one of their files (the caller
    has checked the owner): a short-lived presigned URL to redirect to when
    MEDIA_SIGNED_URL_SECONDS is set, else the bytes themselves."""
    disposition = f'inline; filename="{filename}"'
    seconds = settings.MEDIA_SIGNED_URL_SECONDS
    if seconds:
        url = file.storage.url(
            file.name,
            parameters={"ResponseContentType": content_type, "ResponseContentDisposition": disposition},
            expire=seconds,
        )
        response = HttpResponseRedirect(url)
        # The URL is a bearer secret that expires: no cache keeps the redirect.
        response["Cache-Control"] = "private, no-store"
        return response
    response = FileResponse(file.open("rb"), content_type=content_type)
    response["Content-Disposition"] = disposition
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
