"""Django's URL map: the admin, health and the admin's static files (proxied calls never get here, see asgi.py)."""

from django.contrib import admin
from django.urls import path, re_path

from gateway_project.static_view import static_file_view
from proxy.views import health_view

# Every admin page names the gateway (templates/admin/base_site.html uses these too).
admin.site.site_header = admin.site.site_title = "AI Gateway"
admin.site.index_title = "Gateway administration"

handler404 = "proxy.views.not_found_json"
handler500 = "proxy.views.server_error_json"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", health_view),
    # The admin's CSS/JS, served from the installed apps so no collectstatic step is needed.
    re_path(r"^static/(?P<path>.*)$", static_file_view),
]
