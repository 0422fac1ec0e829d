"""Deploy checks for the admin stack, which lives in ADMIN_MIDDLEWARE rather than MIDDLEWARE."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks.security import base, csrf

# Django's own checks whose logic is gated on a middleware being in MIDDLEWARE.
_MIDDLEWARE_GATED = (
    base.check_security_middleware, base.check_xframe_options_middleware, csrf.check_csrf_middleware,
    base.check_sts, base.check_sts_include_subdomains, base.check_sts_preload,
    base.check_content_type_nosniff, base.check_ssl_redirect, base.check_xframe_deny,
    base.check_referrer_policy, base.check_cross_origin_opener_policy, csrf.check_csrf_cookie_secure,
)


@register(Tags.security, deploy=True)
def admin_stack_check(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Run Django's middleware-gated deploy checks against the stack the admin really runs."""
    found: list[CheckMessage] = []
    # Silencing security.W001-W003 (middleware "missing" from MIDDLEWARE) would also skip the HSTS,
    # SSL-redirect and cookie checks behind them; evaluating them here keeps them honest.
    with _middleware_as(list(settings.ADMIN_MIDDLEWARE)):
        for check in _MIDDLEWARE_GATED:
            found.extend(check(app_configs))
    return found


@contextmanager
def _middleware_as(stack: list[str]) -> Iterator[None]:
    """MIDDLEWARE set to stack for the duration."""
    # Not django.test's override_settings: importing it loads the test framework into every
    # worker (~2 MiB of RSS).
    saved = settings.MIDDLEWARE
    settings.MIDDLEWARE = stack
    try:
        yield
    finally:
        settings.MIDDLEWARE = saved
