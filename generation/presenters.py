"""How a job looks to its owner: one shape for the JSON API, the websocket
and the pages' scripts."""

from __future__ import annotations

from django.urls import reverse

from generation.models import Job
from generation.services import queue_position


def job_out(job: Job) -> dict:
    return {
        "id": str(job.id),
        "status": job.status,
        "model": job.checkpoint.slug,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "strength": job.strength,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "num_images": job.num_images,
        "width": job.width,
        "height": job.height,
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "queue_position": queue_position(job),
        "images": [{"url": reverse("api:image", args=[image.id])} for image in job.images.all()],
        "error": job.error or None,
        "error_code": job.error_code or None,
        "credits_held": job.credits_held,
        "credits_charged": job.credits_charged,
        "seed": job.seed,
        "parent_job": str(job.parent_id) if job.parent_id else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
