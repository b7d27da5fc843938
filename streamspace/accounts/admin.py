from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from streamspace.accounts.models import ApiToken, SSOIdentity, User
from streamspace.audit.services import record


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "role", "is_active", "last_login", "date_joined")
    list_filter = ("role", "is_active", "groups")
    fieldsets = (
        *DjangoUserAdmin.fieldsets[:2],
        ("Role", {"fields": ("role", "is_active", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "email", "role", "password1", "password2")}),)

    def save_model(self, request, obj, form, change):
        previous = type(obj).objects.filter(pk=obj.pk).values_list("role", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        if change and previous is not None and previous != obj.role:
            record(
                "user.role_changed",
                actor=request.user,
                target=obj,
                request=request,
                details={"from": previous, "to": obj.role, "via": "admin"},
            )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created by their owners; admins may see and revoke them, never read keys."""

    list_display = ("name", "user", "prefix", "scope", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("scope",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = [f.name for f in ApiToken._meta.fields if f.name not in ("revoked_at", "key_hash")]
    exclude = ("key_hash",)

    def has_add_permission(self, request):
        return False


@admin.register(SSOIdentity)
class SSOIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "provider", "subject", "created_at", "last_login_at")
    list_filter = ("provider",)
    search_fields = ("subject", "user__username")
    raw_id_fields = ("user",)
