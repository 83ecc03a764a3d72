"""outlast-redis: outlast's store on Redis and Redis Cluster (redis-py asyncio)."""

from outlast_redis.checkpointer import RedisCheckpointer
from outlast_redis.config import RedisConfig
from outlast_redis.connection import RedisConnection
from outlast_redis.store import RedisStore, open_redis

__all__ = ["RedisCheckpointer", "RedisConfig", "RedisConnection", "RedisStore", "open_redis"]
