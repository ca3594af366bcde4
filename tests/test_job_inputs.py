"""Bad input always gets a clear error, creates no job and costs nothing."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from billing.ledger import credits_adjust, credits_grant
from billing.selectors import balance_of
from catalog.seeds import catalog_register_test_checkpoints
from generation.errors import InvalidImage
from generation.images import image_clean, png_encode
from generation.models import Job
from tests.helpers import api_client, jpeg_bytes, png_bytes

pytestmark = pytest.mark.django_db


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'

BAD_INPUTS = [
    ("text-named-png", {"image": ("photo.png", b"just some text, not a picture")}, 400, "invalid_image"),
    ("truncated-png", {"image": ("cut.png", png_bytes(size=(200, 200))[:120])}, 400, "invalid_image"),
    ("bomb-header", {"image": ("bomb.png", png_declaring(100000, 100000))}, 400, "invalid_image"),
    ("svg-with-script", {"image": ("x.svg", SVG)}, 400, "invalid_image"),
    ("gif", {"image": ("x.gif", b"GIF89a" + b"\x00" * 40)}, 400, "invalid_image"),
    ("30-mb-file", {"image": ("big.png", b"\x89PNG" + b"\x00" * (30 * 1024 * 1024))}, 413, "upload_too_large"),
    ("no-image", {"image": None}, 400, "invalid_image"),
    ("strength-1.5", {"strength": 1.5}, 400, "invalid_params"),
    ("strength-negative", {"strength": -1}, 400, "invalid_params"),
    ("strength-text", {"strength": "lots"}, 400, "invalid_params"),
    ("steps-0", {"steps": 0}, 400, "invalid_params"),
    ("steps-10000", {"steps": 10000}, 400, "invalid_params"),
    ("steps-x-strength-below-1", {"steps": 1, "strength": 0.5}, 400, "invalid_params"),
    ("five-images", {"num_images": 5}, 400, "invalid_params"),
    ("size-not-multiple-of-8", {"width": 100, "height": 100}, 400, "invalid_params"),
    ("size-above-max", {"width": 2048, "height": 2048}, 400, "invalid_params"),
    ("negative-seed", {"seed": -5}, 400, "invalid_params"),
    ("unknown-model", {"model": "no-such-model"}, 400, "unknown_model"),
    ("empty-prompt", {"prompt": "   "}, 400, "invalid_params"),
    ("100k-prompt", {"prompt": "x" * 100_000}, 400, "invalid_params"),
    ("someone-elses-parent", {"parent_job": "00000000-0000-0000-0000-000000000000"}, 404, "not_found"),
]


@pytest.fixture
def api(alice, test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())
    credits_grant(user=alice, amount=20, ref="g:alice")
    return api_client(alice)


@pytest.mark.parametrize(
    ("changes", "status", "code"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_input_is_refused_with_no_job_and_no_charge(api, alice, changes, status, code):
    data = {"model": "test-sd1", "prompt": "a boat", "steps": 4, "strength": 0.5}
    image = changes.pop("image", ("in.png", png_bytes()))
    data.update(changes)
    if image is not None:
        data["image"] = SimpleUploadedFile(image[0], image[1], content_type="image/png")
    response = api.post("/api/v1/img2img", data)
    assert response.status_code == status, response.content
    body = response.json()["error"]
    assert body["code"] == code and body["message"]
    assert balance_of(user=alice) == 20
    assert not Job.objects.exists()


def test_field_errors_name_the_fields(api):
    response = api.post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "",
            "steps": 10000,
            "strength": 2,
            "image": SimpleUploadedFile("a.png", png_bytes()),
        },
    )
    assert set(response.json()["error"]["fields"]) >= {"prompt", "steps", "strength"}


def test_not_enough_credits_is_402_and_costs_nothing(api, alice, gpu_worker):
    quote = api.post(
        "/api/v1/quote",
        {"model": "test-sd1", "num_images": 4, "steps": 50, "strength": 1.0, "width": 1024, "height": 1024},
    ).json()["credits"]
    credits_adjust(user=alice, amount=-(21 - quote) if quote <= 20 else -1, ref="adj", actor=None, memo="test")
    assert quote > balance_of(user=alice)
    before = balance_of(user=alice)
    response = api.post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "a boat",
            "num_images": 4,
            "steps": 50,
            "strength": 1.0,
            "width": 1024,
            "height": 1024,
            "image": SimpleUploadedFile("a.png", png_bytes()),
        },
    )
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert balance_of(user=alice) == before and not Job.objects.exists()


def test_submissions_are_rate_limited_per_person(api, alice, settings, gpu_worker):
    settings.SUBMIT_RATE_LIMIT = "2/m"
    settings.MAX_ACTIVE_JOBS = 50
    codes = [
        api.post(
            "/api/v1/img2img", {"model": "test-sd2", "prompt": "x", "image": SimpleUploadedFile("a.png", png_bytes())}
        ).status_code
        for _ in range(3)
    ]
    assert codes[-1] == 429 and 429 not in codes[:2]


def test_quotes_with_a_picture_are_rate_limited_per_person(api, bob, settings):
    settings.QUOTE_RATE_LIMIT = "2/m"

    def quote(client, **extra):
        return client.post("/api/v1/quote", {"model": "test-sd1", "steps": 4, **extra})

    codes = [quote(api, image=upload(png_bytes())).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = quote(api, image=upload(png_bytes()))
    assert refused.json()["error"]["code"] == "rate_limited"
    assert quote(api).status_code == 200  # the create page's quote sends no picture
    assert quote(api_client(bob), image=upload(png_bytes())).status_code == 200


def test_jobs_waiting_at_once_are_capped_per_person(api, alice, settings, gpu_worker):
    settings.MAX_ACTIVE_JOBS = 2
    for _ in range(2):
        assert (
            api.post(
                "/api/v1/img2img",
                {
                    "model": "test-sd1",
                    "prompt": "x",
                    "steps": 4,
                    "strength": 0.5,
                    "image": SimpleUploadedFile("a.png", png_bytes()),
                },
            ).status_code
            == 202
        )
    third = api.post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "x",
            "steps": 4,
            "strength": 0.5,
            "image": SimpleUploadedFile("a.png", png_bytes()),
        },
    )
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_jobs"
    assert Job.objects.count() == 2


def upload(data: bytes, name: str = "x.png"):
    return SimpleUploadedFile(name, data)


def test_the_pixel_limit_is_ours_whatever_pillows_process_wide_state(settings, monkeypatch):
    """Width x height is compared from the header, not through Pillow's
    MAX_IMAGE_PIXELS and bomb warnings, which other code (or a thread) may
    have changed or filtered."""
    settings.UPLOAD_MAX_PIXELS = 128 * 128
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidImage) as refused:
            image_clean(upload(png_bytes(size=(129, 128))))
        assert image_clean(upload(png_bytes(size=(128, 128)))).width == 128  # at the limit: fine
    assert refused.value.status == 400
    assert refused.value.fields == {"image": "too many pixels"}
    assert "16,384 pixels" in refused.value.message


def test_exif_orientation_is_applied_and_metadata_stripped():
    clean = image_clean(upload(jpeg_bytes(size=(120, 40), exif_orientation=6), "x.jpg"))
    assert (clean.width, clean.height) == (40, 120)  # rotated upright
    reopened = Image.open(io.BytesIO(clean.png))
    assert reopened.format == "PNG" and not reopened.getexif()


def test_a_png_of_pixels_alone_is_kept_byte_for_byte():
    data = png_bytes(size=(64, 48))
    assert image_clean(upload(data)).png == data


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("a text chunk", lambda: png_bytes(pnginfo=_with_text("Author", "Alice Example"))),
        ("an EXIF chunk", lambda: png_bytes(exif=_exif_with_maker())),
        ("trailing bytes", lambda: png_bytes() + b"Alice Example"),
        ("an ICC profile", lambda: png_bytes(icc_profile=b"Alice Example" * 8)),
    ],
)
def test_a_png_with_more_than_its_pixels_is_re_encoded_without_it(what, make):
    data = make()
    clean = image_clean(upload(data))
    assert clean.png != data, what
    assert b"Alice Example" not in clean.png
    reopened = Image.open(io.BytesIO(clean.png))
    assert not reopened.info.get("Author") and not reopened.getexif() and "icc_profile" not in reopened.info
    assert reopened.convert("RGB").tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def _with_text(key: str, value: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def _exif_with_maker():
    exif = Image.Exif()
    exif[0x010F] = "Alice Example"  # Make
    return exif


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_the_png_encoder_is_lossless(mode):
    picture = Image.effect_noise((67, 35), 40).convert(mode)  # odd sizes: no row or byte alignment luck
    if mode == "RGBA":
        picture.putalpha(Image.linear_gradient("L").resize(picture.size))
    reopened = Image.open(io.BytesIO(png_encode(picture)))
    assert reopened.format == "PNG" and reopened.mode == mode and reopened.size == picture.size
    assert reopened.tobytes() == picture.tobytes()


def test_transparency_is_flattened_on_white():
    clean = image_clean(upload(png_bytes(mode="RGBA", color=(0, 0, 0, 0))))
    assert Image.open(io.BytesIO(clean.png)).getpixel((0, 0)) == (255, 255, 255)


def test_webp_is_accepted():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="WEBP")
    assert image_clean(upload(buffer.getvalue(), "x.webp")).width == 64


def test_an_oversized_body_is_refused_from_its_length_alone(api, settings):
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    response = api.post("/api/v1/img2img", {"model": "test-sd1", "prompt": "x", "image": upload(b"\x00" * (2 << 20))})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert not Job.objects.exists()


def test_a_model_preview_is_served_publicly(client, settings, tmp_path):
    from django.core.files.base import ContentFile

    from catalog.models import Checkpoint

    catalog_register_test_checkpoints([])
    checkpoint = Checkpoint.objects.create(
        slug="p",
        name="P",
        family="sd1",
        source="a/b",
        default_strength=0.5,
        default_steps=20,
        default_guidance=7,
        price_per_image=1,
    )
    checkpoint.preview.save("p.png", ContentFile(png_bytes()))
    response = client.get(f"/models/{checkpoint.slug}/preview")
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert client.get("/models/nope/preview").status_code == 404


def test_a_session_post_without_its_csrf_token_is_refused_in_the_error_shape(alice):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = browser.post("/api/v1/quote", {"model": "test-sd1"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_a_job_list_page_out_of_range_is_the_nearest_page(api):
    for page in ("0", "-3", "999"):
        body = api.get("/api/v1/jobs", {"page": page}).json()
        assert (body["page"], body["pages"], body["jobs"]) == (1, 1, [])
    assert api.get("/api/v1/jobs", {"page": "two"}).status_code == 400


def test_every_mode_has_one_rules_entry_that_names_real_files_and_its_form():
    from catalog.modes import Mode
    from generation.models import Job
    from generation.params import JOB_FILES, MODE_RULES, SUBMIT_FORMS

    assert set(MODE_RULES) == set(Mode)
    assert set(JOB_FILES) == {field.name for field in Job._meta.fields if field.get_internal_type() == "FileField"}
    for mode, rules in MODE_RULES.items():
        assert set(rules.files) <= set(JOB_FILES), mode
        assert SUBMIT_FORMS[mode] is rules.form and rules.form.mode == mode
        assert ("input_image" in rules.files) == (rules.picture != "none"), mode
