"""`POST /v1/chat/completions`: the OpenAI Chat Completions API in front of tenants' agents."""
