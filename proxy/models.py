"""The response cache's table, used when the gateway's database is PostgreSQL (proxy/cache_store.py)."""

from django.db import models


class CachedAnswer(models.Model):
    """One stored answer (proxy.cache_store.CacheEntry as bytes), found by its key."""

    key = models.CharField(max_length=64, primary_key=True)  # SHA-256 of what must match (proxy/cache.py)
    data = models.BinaryField()
    size = models.PositiveBigIntegerField()
    expires = models.FloatField(db_index=True)  # epoch seconds: pruned after
    used = models.FloatField(db_index=True)  # epoch seconds of the last hit (to the minute): evicted first when oldest

    class Meta:
        db_table = "response_cache"
