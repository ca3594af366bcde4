"""{% webhook_secret_panel %}: the account page's webhook section. The
account page belongs to `accounts`, which does not import generation; this
tag lets its template show generation's part (a read: the secret is created
by the rotate button or the API)."""

from __future__ import annotations

from django import template

from generation.selectors import webhook_secret_of

register = template.Library()


@register.inclusion_tag("generation/_webhook_secret.html", takes_context=True)
def webhook_secret_panel(context) -> dict:
    request = context["request"]
    return {"key": webhook_secret_of(user=request.user), "csrf_token": context.get("csrf_token")}
