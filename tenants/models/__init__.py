"""SQLModel tables of the control plane, one module per table.

Importing this package registers every table on `SQLModel.metadata` (Alembic relies on it)
and configures the mappers at once: records built with `model_construct` (the usage writer's
hot path, a spill file's replay) read their attributes through the mapper's instrumentation,
which SQLAlchemy otherwise sets up only on the first query or ordinary instance, so a process
whose first use was such a record failed (`'NoneType' object has no attribute
'supports_population'`).
"""

from sqlalchemy.orm import configure_mappers

from tenants.models.admin_user import AdminUser
from tenants.models.agent import Agent, AgentVersion
from tenants.models.api_key import ApiKey
from tenants.models.audit_event import AuditEvent
from tenants.models.conversation import Conversation, ConversationItem
from tenants.models.jwt_config import JwtConfig
from tenants.models.model_price import ModelPrice
from tenants.models.stored_run import StoredRun
from tenants.models.tenant import Tenant
from tenants.models.tool_secret import ToolSecret
from tenants.models.upstream import TenantUpstream
from tenants.models.usage import UsageRecord
from tenants.models.usage_dead_letter import UsageDeadLetter
from tenants.models.usage_rollup import UsageRollup

configure_mappers()

__all__ = [
    "AdminUser",
    "Agent",
    "AgentVersion",
    "ApiKey",
    "AuditEvent",
    "Conversation",
    "ConversationItem",
    "JwtConfig",
    "ModelPrice",
    "StoredRun",
    "Tenant",
    "TenantUpstream",
    "ToolSecret",
    "UsageDeadLetter",
    "UsageRecord",
    "UsageRollup",
]
