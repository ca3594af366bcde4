"""The HTTP path portal/asgi.py served before bench/http_status.py chose
a2wsgi: Django's own ASGI handler (for that bench's baseline rows only)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
