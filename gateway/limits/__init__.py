"""Per-tenant request limits, token quotas and concurrency caps.

requests.py   request limits: a moving window, one async Lua call in Redis, or memory
quotas.py     QuotaService (Redis or memory, failure modes) and RunTicket (one run's
              lease and per-model-call token reservations)
redis_store.py / memory.py   the two quota stores (atomic Lua scripts / in-process)
breaker.py    Redis health shared by both: fail open (memory) or closed (503)
headers.py    x-ratelimit-* headers; endpoints.py `GET /v1/limits`
"""
