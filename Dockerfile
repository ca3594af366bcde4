# One image for the web tier and the workers; REQUIREMENTS picks the set
# (base: web, migrate, beat, housekeeping; worker: adds torch and diffusers).
# GPU workers need no CUDA base image: torch==2.13.0 from PyPI for Linux
# x86_64 is the CUDA build and brings the CUDA runtime as nvidia-* wheels;
# only the driver comes from the host, through the NVIDIA Container Toolkit
# (docker-compose.yml reserves the GPUs).
FROM python:3.11-slim
ARG REQUIREMENTS=base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/${REQUIREMENTS}.txt
COPY . .
RUN SECRET_KEY=build-only DEBUG=false python manage.py collectstatic --noinput
# The compose volumes mount on these: a new named volume takes the folder's
# owner from the image, so the app (not root) can write to it.
RUN useradd --create-home portal \
 && mkdir -p /app/var /data/media /data/models /data/compile-cache /var/lock/portal-gpus \
 && chown portal /app/var /data/media /data/models /data/compile-cache /var/lock/portal-gpus
USER portal
EXPOSE 8000
# The web command; docker-compose.yml sets each service's own. Client
# addresses come from TRUSTED_PROXIES in the app, not from uvicorn.
CMD ["uvicorn", "portal.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--no-proxy-headers"]
