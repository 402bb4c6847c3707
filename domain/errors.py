"""Errors the domain raises, named for what went wrong.

Each family maps to one status of the public contract (see ``api/errors.py``); the domain
itself knows nothing of HTTP.
"""


class DomainError(Exception):
    """A command was refused by a business rule."""


class NotFound(DomainError):
    """The thing does not exist, or the actor may not know that it does."""


class PermissionDenied(DomainError):
    """The actor may see the thing but not do this to it."""


class InvalidValue(DomainError):
    """A value breaks a rule of the domain (too long, wrong shape, out of range)."""


class Conflict(DomainError):
    """The command contradicts the current state (already done, name taken, ...)."""


class Gone(DomainError):
    """The thing existed but can no longer be used (an expired or used-up invite)."""


class NotAMember(NotFound):
    """The actor is not a member of the workspace or private channel."""


class Banned(PermissionDenied):
    """The user is banned from the workspace."""


class LastOwner(Conflict):
    """The change would leave the workspace without an owner."""


class UsernameTaken(Conflict):
    """Another user registered this username first."""


class AlreadyAMember(Conflict):
    """The user is already a member."""


class MessageDeleted(Gone):
    """The message was deleted; it can no longer be edited or reacted to."""


class ChannelArchived(Conflict):
    """The channel is archived and takes no new messages."""
