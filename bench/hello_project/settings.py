"""Reference: the smallest Django project with one async view (no apps, middleware or database)."""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.hello_project.urls"
DATABASES: dict = {}
USE_TZ = True
USE_I18N = False
