"""Media on an S3-compatible store (MEDIA_STORAGE=s3): uploads and results go
to the bucket through Django's storage API, on the web tier and on a real
worker alike; the owner gets them only through the owner-checked view
(streamed, or redirected to a short-lived presigned URL); retention deletes
the objects; a bad setting stops the start. The store is moto's S3 server on
loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import urllib3
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from moto.server import ThreadedMotoServer
from PIL import Image

from catalog.availability import available_slugs
from generation.models import Job
from generation.services import job_succeed, results_expire
from portal.settings import media_storage
from tests.conftest import wait_for
from tests.helpers import api_client, png_bytes

# The storage backend is the subject, not the database engine: CI runs this in
# the PostgreSQL pass only (the local default runs on SQLite in the other files).
pytestmark = pytest.mark.one_engine

ROOT = Path(__file__).resolve().parent.parent
REAL_WORKER_MODEL = "test-sd1-alt"  # no session worker serves it: only the one a test starts
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, settings, monkeypatch, tmp_path):
    """MEDIA_STORAGE=s3 on a fresh private bucket, in this process (the
    settings that portal.settings builds from these variables) and for the
    workers a test starts (`env`). MEDIA_ROOT is an empty folder that must
    stay empty."""
    env = {
        "MEDIA_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": f"media-{uuid.uuid4().hex[:12]}",
        "AWS_S3_ENDPOINT_URL": s3_server,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=env["AWS_STORAGE_BUCKET_NAME"])

    def use(signed_url_seconds: int = 0) -> None:
        store = media_storage("s3", signed_url_seconds)
        settings.MEDIA_SIGNED_URL_SECONDS = signed_url_seconds
        settings.STORAGES = {**settings.STORAGES, "default": store, "private": store}

    settings.MEDIA_ROOT = env["MEDIA_ROOT"]
    use()

    class Bucket:
        name = env["AWS_STORAGE_BUCKET_NAME"]
        media_root = Path(env["MEDIA_ROOT"])

        def __init__(self) -> None:
            self.env, self.client, self.use = env, client, use

        def keys(self) -> set[str]:
            return {o["Key"] for o in client.list_objects_v2(Bucket=self.name).get("Contents", [])}

        def read(self, key: str) -> bytes:
            return client.get_object(Bucket=self.name, Key=key)["Body"].read()

    return Bucket()


@pytest.fixture
def served(test_checkpoints):
    """A heartbeat that serves every test checkpoint, so a submit is taken
    (nothing is committed in these tests, so no task is sent)."""
    from workers.heartbeat import publish, remove

    worker_id = f"media-{uuid.uuid4().hex[:8]}"
    publish(worker_id=worker_id, serves=list(test_checkpoints), loaded=[], device="cpu")
    yield
    remove(worker_id)


def submit(api, *, model: str = "test-sd1", **fields):
    data = {"model": model, "prompt": "a harbour", "seed": 1, "steps": 5, "strength": 0.6, "width": 128, "height": 96}
    data.update(fields)
    data["image"] = SimpleUploadedFile("in.png", png_bytes())
    response = api.post("/api/v1/img2img", data)
    assert response.status_code == 202, response.content
    return response.json()["id"]


def succeeded(api) -> Job:
    """A job whose upload and one result are stored, as a worker leaves it
    (the worker's own service call, in this process)."""
    job = Job.objects.get(id=submit(api))
    Job.objects.filter(id=job.id).update(status=Job.Status.RUNNING, attempts=1, worker="w")
    job.refresh_from_db()
    assert job_succeed(job=job, images=[Image.new("RGB", (128, 96), (1, 2, 3))])
    return Job.objects.get(id=job.id)


def local_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


# --- End to end, with a real worker ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_keeps_its_upload_and_result_in_the_bucket_and_only_the_owner_gets_them(s3, paid_api, bob, start_worker):
    start_worker(REAL_WORKER_MODEL, **s3.env)
    wait_for(lambda: REAL_WORKER_MODEL in available_slugs(), timeout=90, message="the worker")
    job_id = submit(paid_api, model=REAL_WORKER_MODEL)
    job = Job.objects.get(id=job_id)
    assert s3.keys() == {job.input_image.name}  # stored at submit, before any worker

    job = wait_for(lambda: Job.objects.filter(id=job_id, status__in=Job.FINISHED).first(), timeout=120, message="job")
    assert job.status == "succeeded", job.error
    (image,) = job.images.all()
    assert s3.keys() == {job.input_image.name, image.file.name}
    url = paid_api.get(f"/api/v1/jobs/{job_id}").json()["images"][0]["url"]

    response = paid_api.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    body = b"".join(response.streaming_content)
    assert body == s3.read(image.file.name) and body.startswith(PNG_MAGIC)
    assert api_client(bob).get(url).status_code == 404
    assert local_files(s3.media_root) == []


# --- In this process: retention, signed URLs, privacy -----------------------------


@pytest.mark.django_db
def test_retention_deletes_the_objects_from_the_bucket(s3, paid_api, served, settings):
    job = succeeded(paid_api)
    names = {job.input_image.name, job.images.get().file.name}
    assert s3.keys() == names
    Job.objects.filter(id=job.id).update(
        finished_at=timezone.now() - timedelta(days=settings.RESULT_RETENTION_DAYS + 1)
    )

    assert results_expire() == 1
    assert s3.keys() == set()
    assert local_files(s3.media_root) == []


@pytest.mark.django_db
def test_objects_are_stored_without_a_public_grant(s3, paid_api, served):
    job = succeeded(paid_api)
    for name in (job.input_image.name, job.images.get().file.name):
        grants = s3.client.get_object_acl(Bucket=s3.name, Key=name)["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]  # the owner's, nobody else's
        assert all("URI" not in g["Grantee"] for g in grants)  # no AllUsers / AuthenticatedUsers


@pytest.mark.django_db
def test_with_signed_urls_the_owner_is_redirected_to_a_short_lived_url_and_others_get_404(s3, paid_api, bob, served):
    job = succeeded(paid_api)
    image = job.images.get()
    s3.use(signed_url_seconds=45)
    url = paid_api.get(f"/api/v1/jobs/{job.id}").json()["images"][0]["url"]

    response = paid_api.get(url)
    assert response.status_code == 302 and "no-store" in response["Cache-Control"]
    signed = urlparse(response["Location"])
    query = parse_qs(signed.query)
    assert f"{signed.scheme}://{signed.netloc}" == s3.env["AWS_S3_ENDPOINT_URL"]
    assert signed.path == f"/{s3.name}/{image.file.name}"
    assert query["X-Amz-Expires"] == ["45"] and "X-Amz-Signature" in query
    fetched = urllib3.request("GET", response["Location"], timeout=10)
    assert fetched.status == 200 and fetched.headers["Content-Type"] == "image/png"
    assert fetched.data == s3.read(image.file.name)
    assert api_client(bob).get(url).status_code == 404


# --- Settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kind", "seconds", "message"),
    [
        ({}, "s3", 0, "AWS_STORAGE_BUCKET_NAME"),
        ({"AWS_STORAGE_BUCKET_NAME": "Media_Bucket"}, "s3", 0, "AWS_STORAGE_BUCKET_NAME"),
        ({"AWS_STORAGE_BUCKET_NAME": "media", "AWS_S3_ENDPOINT_URL": "minio:9000"}, "s3", 0, "AWS_S3_ENDPOINT_URL"),
        ({"AWS_STORAGE_BUCKET_NAME": "media", "AWS_ACCESS_KEY_ID": "k"}, "s3", 0, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_STORAGE_BUCKET_NAME": "media"}, "s3", 8 * 24 * 3600, "MEDIA_SIGNED_URL_SECONDS"),
        ({}, "local", 60, "MEDIA_SIGNED_URL_SECONDS"),
    ],
)
def test_a_bad_media_setting_is_refused(monkeypatch, env, kind, seconds, message):
    for name in ("AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        media_storage(kind, seconds)


def test_s3_without_a_bucket_stops_the_start():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", MEDIA_STORAGE="s3")
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr and "AWS_STORAGE_BUCKET_NAME" in started.stderr


def test_a_good_s3_setting_is_private_and_presigned(monkeypatch):
    monkeypatch.setenv("AWS_STORAGE_BUCKET_NAME", "portal-media")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "https://minio.internal:9000")
    options = media_storage("s3", 120)["OPTIONS"]
    assert options["bucket_name"] == "portal-media" and options["endpoint_url"] == "https://minio.internal:9000"
    assert options["default_acl"] is None and options["querystring_auth"] is True
    assert options["querystring_expire"] == 120 and options["file_overwrite"] is False
