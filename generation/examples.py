"""An example for every operation of the JSON API, as the OpenAPI schema
shows them (portal.api adds them to the schema it serves): the form a
request sends and the answer it gets. tests/test_api_examples.py checks each
against the operation's own schemas, so they cannot drift from the API."""

from __future__ import annotations

JOB_ID = "3f1c2b7e-9a4d-4f0e-8b6a-2d5e7c9a1b30"
IMAGE_ID = "b7e4a1c9-2d3f-4e5a-8b6c-7d8e9f0a1b2c"

_SETTINGS = {
    "prompt": "the same street in watercolour, soft morning light",
    "negative_prompt": "blurry",
    "strength": 0.6,
    "steps": 20,
    "guidance_scale": 7.0,
    "scheduler": "dpmpp_2m_karras",
    "loras": [{"slug": "watercolor-sd15", "weight": 0.8}],
    "hires_scale": 1.0,
    "hires_strength": 0.0,
    "seed": 1234,
    "num_images": 1,
    "width": 512,
    "height": 384,
    "mask_blur": 0,
    "control": "",
    "preprocess": "",
    "conditioning_scale": 1.0,
    "control_start": 0.0,
    "control_end": 1.0,
}
JOB = {
    "id": JOB_ID,
    "mode": "img2img",
    **_SETTINGS,
    "status": "queued",
    "model": "sd15",
    "progress": {"step": 0, "total": 12},
    "queue_position": 1,
    "images": [],
    "error": None,
    "error_code": None,
    "credits_held": 1,
    "credits_charged": None,
    "parent_job": None,
    "created_at": "2026-12-07T19:05:36.123456+00:00",
    "finished_at": None,
    "webhook": None,
    "mask_url": None,
    "control_image_url": None,
    "hires": None,
    "expires_at": None,
}
FINISHED_JOB = {
    **JOB,
    "status": "succeeded",
    "progress": {"step": 12, "total": 12},
    "queue_position": None,
    "images": [{"url": f"/api/v1/images/{IMAGE_ID}"}],
    "credits_charged": 1,
    "finished_at": "2026-12-07T19:05:39.654321+00:00",
    "webhook": {"url": "https://example.com/hooks/portal", "status": "delivered", "attempts": 1},
    "expires_at": "2027-01-06T19:05:39.654321+00:00",
}
MODEL = {
    "slug": "sd15",
    "name": "Stable Diffusion 1.5",
    "family": "sd15",
    "tags": ["photoreal", "general"],
    "modes": ["img2img", "txt2img", "inpaint", "controlnet"],
    "controlnets": [
        {
            "slug": "sd15-canny",
            "name": "Canny edges (SD 1.5)",
            "kind": "canny",
            "cost_factor": 1.35,
            "is_test": False,
            "available": True,
        }
    ],
    "loras": [
        {
            "slug": "watercolor-sd15",
            "name": "Watercolor (SD 1.5)",
            "trigger_words": "watercolor",
            "default_weight": 0.8,
            "price_per_image": 0,
            "is_test": False,
            "available": True,
        }
    ],
    "schedulers": ["dpmpp_2m_karras", "dpmpp_2m", "euler_a", "euler", "dpmpp_sde_karras", "ddim", "unipc"],
    "default_scheduler": "dpmpp_2m_karras",
    "native_size": [512, 512],
    "cost_per_image": 1,
    "defaults": {"strength": 0.6, "steps": 20, "guidance_scale": 7.0},
    "limits": {"max_side": 1024, "max_steps": 50, "allowed_sizes": []},
    "is_test": False,
    "available": True,
}

# (method, path): {"request": the form or query it sends, "response": its answer}.
# A PNG answer has no JSON example: its request is the example.
EXAMPLES: dict[tuple[str, str], dict] = {
    ("get", "/api/v1/account"): {"response": {"email": "you@example.com", "credits": 10}},
    ("get", "/api/v1/models"): {"response": {"models": [MODEL]}},
    ("post", "/api/v1/quote"): {
        "request": {"mode": "txt2img", "model": "sd15", "steps": 20, "width": 512, "height": 512},
        "response": {"credits": 2},
    },
    ("post", "/api/v1/img2img"): {
        "request": {"model": "sd15", "prompt": _SETTINGS["prompt"], "strength": 0.6, "image": "(photo.jpg)"},
        "response": JOB,
    },
    ("post", "/api/v1/txt2img"): {
        "request": {"model": "sd15", "prompt": "a lighthouse at dusk", "width": 512, "height": 384},
        "response": {**JOB, "mode": "txt2img", "prompt": "a lighthouse at dusk", "strength": 1.0},
    },
    ("post", "/api/v1/inpaint"): {
        "request": {"model": "sd15", "prompt": "a red sky", "image": "(photo.png)", "mask": "(mask.png)"},
        "response": {
            **JOB,
            "mode": "inpaint",
            "prompt": "a red sky",
            "strength": 1.0,
            "mask_blur": 4,
            "mask_url": f"/api/v1/jobs/{JOB_ID}/mask",
        },
    },
    ("post", "/api/v1/controlnet"): {
        "request": {
            "model": "sd15",
            "control": "sd15-canny",
            "prompt": "a glass house",
            "control_image": "(photo.png)",
        },
        "response": {
            **JOB,
            "mode": "controlnet",
            "prompt": "a glass house",
            "strength": 1.0,
            "control": "sd15-canny",
            "preprocess": "canny",
            "control_image_url": f"/api/v1/jobs/{JOB_ID}/control",
        },
    },
    ("post", "/api/v1/controlnet/preview"): {"request": {"preprocess": "canny", "control_image": "(photo.png)"}},
    ("get", "/api/v1/jobs"): {"request": {"page": 1}, "response": {"jobs": [FINISHED_JOB], "page": 1, "pages": 1}},
    ("get", "/api/v1/jobs/{job_id}"): {"request": {"job_id": JOB_ID}, "response": FINISHED_JOB},
    ("post", "/api/v1/jobs/{job_id}/cancel"): {
        "request": {"job_id": JOB_ID},
        "response": {
            **JOB,
            "status": "canceled",
            "queue_position": None,
            "error": "Canceled. The held credits were returned.",
            "error_code": "canceled",
            "finished_at": "2026-12-07T19:05:37.000001+00:00",
        },
    },
    ("get", "/api/v1/images/{image_id}"): {"request": {"image_id": IMAGE_ID}},
    ("get", "/api/v1/jobs/{job_id}/mask"): {"request": {"job_id": JOB_ID}},
    ("get", "/api/v1/jobs/{job_id}/control"): {"request": {"job_id": JOB_ID}},
    ("get", "/api/v1/jobs/{job_id}/input"): {"request": {"job_id": JOB_ID}},
    ("get", "/api/v1/webhooks/secret"): {"response": {"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
    ("post", "/api/v1/webhooks/secret/rotate"): {"response": {"key": "whsec_Zq3x9ymPe4vBS0dJk8cR1TnLw7uAaHfG"}},
}


def add_examples(schema: dict) -> dict:
    """Put each operation's example in the OpenAPI `schema`: the request's
    (a form body's `example`, else each parameter's) and its success
    answer's."""
    for (method, path), example in EXAMPLES.items():
        operation = schema["paths"][path][method]
        request = example.get("request", {})
        for parameter in operation.get("parameters", []):
            if parameter["name"] in request:
                parameter["example"] = request[parameter["name"]]
        for content in operation.get("requestBody", {}).get("content", {}).values():
            content["example"] = request
        if "response" in example:
            success = next(code for code in (200, 202) if code in operation["responses"])
            operation["responses"][success]["content"]["application/json"]["example"] = example["response"]
    return schema
