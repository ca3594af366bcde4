"""Settings come from the environment; bad values fail loudly at start; the
production settings pass Django's deploy checks; the web tier runs without
torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Settings are read in subprocesses with their own environment: the test
# database's engine plays no part (CI runs this in the PostgreSQL pass only).
pytestmark = pytest.mark.one_engine

ROOT = Path(__file__).resolve().parent.parent
SETUP = "import django; django.setup(); print('started')"


def start(env_changes: dict[str, str | None], code: str = SETUP) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("FREE_CREDITS", "ten"),
        ("FREE_CREDITS", "-1"),
        ("ACCOUNT_EMAIL_VERIFICATION", "sometimes"),
        ("DATABASE_URL", "nosuchdb://x/y"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("HTTPS_ONLY", "perhaps"),
        ("TRUSTED_PROXIES", "10.0.0.1,10.0.0.300"),
        ("TRUSTED_PROXY_COUNT", "1"),  # replaced by TRUSTED_PROXIES: a count trusts anyone's header
        ("SECRET_KEY", "change-me"),  # .env.example's placeholder
        ("METRICS_TOKEN", "change-me"),
        ("WORKER_METRICS_PORT", "9808"),  # without PROMETHEUS_MULTIPROC_DIR the pool's counts would be lost
    ],
)
def test_a_bad_value_fails_loudly_at_start(name, value):
    result = start({name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SUBMIT_RATE_LIMIT", "banana"),
        ("SUBMIT_RATE_LIMIT", "20/mbanana"),
        ("CHAT_RATE_LIMIT", "10 per minute"),
        ("CHAT_IP_RATE_LIMIT", "0/m"),
        ("QUOTE_RATE_LIMIT", "5/0m"),
        ("CHAT_NEW_CONVERSATION_RATE_LIMIT", "/h"),
    ],
)
def test_a_bad_rate_stops_manage_py_check(name, value):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", name: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr


def test_rates_in_the_librarys_syntax_start():
    rates = {"SUBMIT_RATE_LIMIT": "5/10m", "CHAT_RATE_LIMIT": "3/h", "CHAT_IP_RATE_LIMIT": "100/d"}
    result = start(rates, SETUP + "\nfrom django.conf import settings as s; print(s.SUBMIT_RATE_LIMIT)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "5/10m"


def test_debug_off_refuses_to_start_without_a_secret_key():
    result = start({"DEBUG": "false", "SECRET_KEY": None})
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_debug_on_starts_without_a_secret_key():
    result = start({"DEBUG": "true", "SECRET_KEY": None})
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_the_embedded_defaults_start(tmp_path):
    result = start(
        {"DATABASE_URL": None, "REDIS_URL": None, "MEDIA_ROOT": None, "MODELS_DIR": None},
        SETUP + "\nfrom django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.FREE_CREDITS, "
        "s.ACCOUNT_EMAIL_VERIFICATION, s.MEDIA_ROOT)",
    )
    assert result.returncode == 0, result.stderr
    engine, name, credits, verification, media = result.stdout.split()[-5:]
    assert engine == "django.db.backends.sqlite3"
    assert name == str(ROOT / "var" / "db.sqlite3")
    assert (credits, verification) == ("10", "mandatory")
    assert media == str(ROOT / "var" / "media")


def test_production_settings_pass_the_deploy_checks():
    env = {
        "DEBUG": None,
        "SECRET_KEY": "x7!" + "k" * 60 + "Q2-unique-production-looking-secret",
        "ALLOWED_HOSTS": "portal.example.com",
        "HTTPS_ONLY": None,
        "STATIC_MANIFEST": None,
        "DJANGO_ALLOW_ASYNC_UNSAFE": None,
    }
    code = (
        "import sys; from django.core.management import execute_from_command_line as m; "
        "m(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])"
    )
    result = start(env, code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'diffusers', 'transformers', 'accelerate', 'safetensors'}:
            raise ImportError('the web tier must not import ' + name)
sys.meta_path.insert(0, _NoTorch())
import django
django.setup()
from django.urls import get_resolver
from django.test import Client
import portal.celery, generation.services, generation.dispatch  # jobs are sent to workers by task name
for pattern in get_resolver().url_patterns:
    pass
response = Client().get('/')
assert response.status_code == 200, response.status_code
response = Client().get('/accounts/signup/')
assert response.status_code == 200, response.status_code
assert not any(m.split('.')[0] == 'torch' for m in sys.modules)
# Django imports each installed app's config; nothing else of workers/ is needed.
assert {m for m in sys.modules if m.startswith('workers.')} <= {'workers.apps'}, 'the web tier imported workers/'

print('served without torch')
"""


def test_the_web_tier_imports_and_serves_without_torch():
    result = start({"ALLOWED_HOSTS": "testserver"}, BLOCK_TORCH)
    assert result.returncode == 0, result.stderr
    assert "served without torch" in result.stdout
