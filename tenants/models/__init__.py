"""SQLModel tables of the control plane, one module per table.

Importing this package registers every table on `SQLModel.metadata` (Alembic relies on it).
"""

from tenants.models.agent import Agent, AgentVersion
from tenants.models.api_key import ApiKey
from tenants.models.tenant import Tenant
from tenants.models.usage import UsageRecord

__all__ = ["Agent", "AgentVersion", "ApiKey", "Tenant", "UsageRecord"]
