"""Workers: the Celery tasks that run jobs and the diffusers runtime (the
only code that imports torch and diffusers). Imports generation; nothing
imports workers."""
