"""Settings for the benchmarks that compare channel layer backends
(bench/ws_progress.py): portal.settings with CHANNEL_LAYERS chosen by
BENCH_CHANNEL_LAYER (pubsub: channels_redis.pubsub.RedisPubSubChannelLayer,
what the portal configures; core: channels_redis.core.RedisChannelLayer).
Point DJANGO_SETTINGS_MODULE at bench.ws_settings for the server and for the
process that publishes (run from the repository root)."""

import os

from portal.settings import *  # noqa: F403
from portal.settings import CHANNEL_LAYERS, REDIS_URL

BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

CHANNEL_LAYERS = {
    "default": {
        **CHANNEL_LAYERS["default"],
        "BACKEND": BACKENDS[os.environ.get("BENCH_CHANNEL_LAYER", "core")],
        "CONFIG": {**CHANNEL_LAYERS["default"]["CONFIG"], "hosts": [REDIS_URL]},
    }
}
