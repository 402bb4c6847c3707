"""The contexts Chorus is made of, each declared once, and what the rest derives from them.

A context's declaration names its aggregates (each declares its stream kind: scope, readers,
the events that change access, and its snapshot interval), its read models and its routes.
The event hub's scope table, the streams read model, the event log's visibility filter, the
``/ws`` subscription kinds, the projection list and the HTTP routes are all derived from
``CONTEXTS``: adding a context is its own modules plus one line there (docs/ARCHITECTURE.md,
"Adding a context").
"""

from __future__ import annotations

from api.catalogue import Catalogue, Context
from api.channels import ChannelController
from api.documents import DocumentController
from api.erasure import ErasureController
from api.erasure_audit import ErasureAuditController
from api.notifications import NotificationController
from api.projects import ProjectController, TaskController
from api.read_state import ReadStateController
from api.retention import RetentionController
from api.users import ProfileController, UserController
from api.webhooks import WebhookController
from api.workspaces import InviteController, WorkspaceController, WorkspaceLifecycleController
from application import (
    channels,
    documents,
    erasure,
    identity,
    instance,
    messages,
    notifications,
    presence,
    projects,
    read_markers,
    retention,
    webhooks,
    workspaces,
)
from domain.channels import Channel
from domain.documents import Document
from domain.identity import SignIn, User
from domain.indexes import DirectChannelPair, UsernameClaim
from domain.instance import Instance
from domain.messages import Message
from domain.notification_preferences import NotificationPreferences
from domain.notifications import Inbox, MessageNotices
from domain.operations import ReactionSkip, ReadModelSkip
from domain.presence import Session
from domain.projects import Project
from domain.read_markers import ReadMarkers
from domain.tasks import Task
from domain.webhooks import Delivery, Webhooks
from domain.workspaces import Workspace
from projections.base import Projection
from projections.channels import ChannelsProjection
from projections.documents import DocumentsProjection
from projections.erasure_audit import ErasureAuditProjection
from projections.erasures import ErasuresProjection
from projections.notifications import NotificationsProjection
from projections.presence import PresenceProjection
from projections.projects import ProjectsProjection
from projections.read_state import ReadStateProjection
from projections.retention import RetentionProjection
from projections.timelines import TimelinesProjection
from projections.users import UsersProjection
from projections.webhooks import WebhooksProjection
from projections.workspaces import WorkspacesProjection

IDENTITY = Context(
    "identity",
    aggregates=(User, SignIn, UsernameClaim, DirectChannelPair),
    handlers=identity.HANDLERS,
    read_models=(UsersProjection,),
    routes=(UserController, ProfileController),
)
WORKSPACES = Context(
    "workspaces",
    aggregates=(Workspace,),
    handlers=workspaces.HANDLERS,
    read_models=(WorkspacesProjection,),
    routes=(WorkspaceController, WorkspaceLifecycleController, InviteController),
)
CHANNELS = Context(
    "channels",
    aggregates=(Channel,),
    handlers=channels.HANDLERS,
    read_models=(ChannelsProjection,),
    routes=(ChannelController,),
)
MESSAGES = Context(
    "messages",
    aggregates=(Message,),
    handlers=messages.HANDLERS,
    read_models=(TimelinesProjection,),
)
PRESENCE = Context(
    "presence",
    aggregates=(Session,),
    handlers=presence.HANDLERS,
    read_models=(PresenceProjection,),
)
DOCUMENTS = Context(
    "documents",
    aggregates=(Document,),
    handlers=documents.HANDLERS,
    read_models=(DocumentsProjection,),
    routes=(DocumentController,),
)
NOTIFICATIONS = Context(
    "notifications",
    aggregates=(Inbox, MessageNotices, NotificationPreferences),
    handlers=notifications.HANDLERS,
    read_models=(NotificationsProjection,),
    policies=notifications.POLICIES,
    routes=(NotificationController,),
)
# Issue 19: where each user stopped reading, and the counts worked out from it.
READ_STATE = Context(
    "read_state",
    aggregates=(ReadMarkers,),
    handlers=read_markers.HANDLERS,
    read_models=(ReadStateProjection,),
    routes=(ReadStateController,),
)
WEBHOOKS = Context(
    "webhooks",
    aggregates=(Webhooks, Delivery),
    handlers=webhooks.HANDLERS,
    read_models=(WebhooksProjection,),
    policies=(webhooks.WEBHOOKS,),
    routes=(WebhookController,),
)
# Issue 20: erasure by crypto-shredding (its event is the user's: UserErased).
ERASURE = Context(
    "erasure",
    aggregates=(),
    handlers=erasure.HANDLERS,
    read_models=(ErasuresProjection, ErasureAuditProjection),
    routes=(ErasureController, ErasureAuditController),
)
# Issue 20: per-workspace retention (its events are the workspace's; its worker is in
# application/retention.py, started by api/bootstrap.py).
RETENTION = Context(
    "retention",
    aggregates=(),
    handlers=retention.HANDLERS,
    read_models=(RetentionProjection,),
    routes=(RetentionController,),
)
# Issue 21: projects, their workflow and their tasks (a live task board).
PROJECTS = Context(
    "projects",
    aggregates=(Project, Task),
    handlers=projects.HANDLERS,
    read_models=(ProjectsProjection,),
    routes=(ProjectController, TaskController),
)
INSTANCE = Context(
    "instance",
    aggregates=(Instance, ReadModelSkip, ReactionSkip),
    handlers=instance.HANDLERS,
)

CONTEXTS = Catalogue(
    (
        IDENTITY,
        WORKSPACES,
        CHANNELS,
        MESSAGES,
        PRESENCE,
        DOCUMENTS,
        NOTIFICATIONS,
        READ_STATE,
        WEBHOOKS,
        ERASURE,
        RETENTION,
        PROJECTS,
        INSTANCE,
    )
)


def all_projections() -> list[Projection]:
    """Every read model of Chorus, fresh."""
    return CONTEXTS.read_models()
