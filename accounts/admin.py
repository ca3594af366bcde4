from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import FreeCreditClaim, User


@admin.register(FreeCreditClaim)
class FreeCreditClaimAdmin(admin.ModelAdmin):
    list_display = ["email_hash", "claimed_at"]
    readonly_fields = ["email_hash", "claimed_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ["email", "username", "queue_weight", "is_staff", "is_active", "date_joined"]
    list_filter = [*UserAdmin.list_filter, "queue_weight"]
    fieldsets = [*UserAdmin.fieldsets, ("Queue", {"fields": ["queue_weight"]})]
    search_fields = ["email", "username"]
    ordering = ["-date_joined"]
